package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Device is one of a user's sessions as the device list shows it.
type Device struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func timeFromMillis(ms int64) time.Time { return time.UnixMilli(ms) }

// Devices lists the user's devices.
func (s *Service) Devices(ctx context.Context, localpart string) ([]Device, error) {
	rows, err := s.db.Query(ctx, `SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices
		WHERE localpart = $1 ORDER BY created_ts, device_id`, localpart)
	if err != nil {
		return nil, fmt.Errorf("list devices of %q: %w", localpart, err)
	}
	defer rows.Close()
	out := []Device{}
	for rows.Next() {
		var d Device
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenIP, &d.LastSeenTS); err != nil {
			return nil, fmt.Errorf("list devices of %q: %w", localpart, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Device returns one device, or ErrNotFound.
func (s *Service) Device(ctx context.Context, localpart, deviceID string) (Device, error) {
	d := Device{DeviceID: deviceID}
	err := s.db.QueryRow(ctx, `SELECT display_name, last_seen_ip, last_seen_ts FROM devices WHERE localpart = $1 AND device_id = $2`,
		localpart, deviceID).Scan(&d.DisplayName, &d.LastSeenIP, &d.LastSeenTS)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("read device %s of %q: %w", deviceID, localpart, err)
	}
	return d, nil
}

// RenameDevice sets a device's display name, or returns ErrNotFound.
func (s *Service) RenameDevice(ctx context.Context, localpart, deviceID, name string) error {
	res, err := s.db.Exec(ctx, `UPDATE devices SET display_name = $1 WHERE localpart = $2 AND device_id = $3`, name, localpart, deviceID)
	if err != nil {
		return fmt.Errorf("rename device %s of %q: %w", deviceID, localpart, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return s.devicesChanged(ctx, localpart, deviceID)
}

// DeleteDevices deletes devices and their tokens. Devices that do not exist are
// ignored, as the spec's /delete_devices asks.
func (s *Service) DeleteDevices(ctx context.Context, localpart string, deviceIDs []string) error {
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, id := range deviceIDs {
			if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2`, localpart, id); err != nil {
				return fmt.Errorf("delete tokens of device %s: %w", id, err)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM devices WHERE localpart = $1 AND device_id = $2`, localpart, id); err != nil {
				return fmt.Errorf("delete device %s: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.devicesDeleted(ctx, localpart, deviceIDs, false)
}

// deviceIDs lists the user's device IDs, optionally without one.
func (s *Service) deviceIDs(ctx context.Context, localpart, except string) ([]string, error) {
	list, err := s.Devices(ctx, localpart)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range list {
		if d.DeviceID != except {
			out = append(out, d.DeviceID)
		}
	}
	return out, nil
}

// Connection is one address a device was last seen from (/admin/whois).
type Connection struct {
	IP       string `json:"ip"`
	LastSeen int64  `json:"last_seen"`
	// UserAgent is not recorded; always "".
	UserAgent string `json:"user_agent"`
}

// WhoisSession is one session of a device: Hongyan keeps one per device.
type WhoisSession struct {
	Connections []Connection `json:"connections"`
}

// WhoisDevice lists a device's sessions.
type WhoisDevice struct {
	Sessions []WhoisSession `json:"sessions"`
}

// Whois is the answer of /admin/whois: a user's devices and where each was last
// seen.
type Whois struct {
	UserID  string                 `json:"user_id"`
	Devices map[string]WhoisDevice `json:"devices"`
}

// Whois reports where a local user's devices were last seen. Only a server admin, or
// the user about themself, may ask: addresses are personal data.
func (s *Service) Whois(ctx context.Context, caller Caller, userID string) (Whois, error) {
	if !caller.IsAdmin && caller.UserID != userID {
		return Whois{}, mxerror.New(mxerror.Forbidden, "only a server admin may look up other users")
	}
	local, ok := s.LocalpartOf(userID)
	if !ok {
		return Whois{}, mxerror.New(mxerror.NotFound, "%s is not a user of this server", userID)
	}
	if _, err := s.Account(ctx, local); errors.Is(err, ErrNotFound) {
		return Whois{}, mxerror.New(mxerror.NotFound, "unknown user %s", userID)
	} else if err != nil {
		return Whois{}, err
	}
	devices, err := s.Devices(ctx, local)
	if err != nil {
		return Whois{}, err
	}
	out := Whois{UserID: userID, Devices: map[string]WhoisDevice{}}
	for _, d := range devices {
		conns := []Connection{}
		if d.LastSeenIP != "" {
			conns = append(conns, Connection{IP: d.LastSeenIP, LastSeen: d.LastSeenTS})
		}
		out.Devices[d.DeviceID] = WhoisDevice{Sessions: []WhoisSession{{Connections: conns}}}
	}
	return out, nil
}
