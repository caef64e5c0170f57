package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// RemoteDeviceList is another server's user's whole device list, as GET
// /user/devices answers it.
type RemoteDeviceList struct {
	StreamID int64
	// Devices maps device IDs to their device keys (with the display name in
	// unsigned.device_display_name); a device without keys maps to nil.
	Devices             map[string]json.RawMessage
	Master, SelfSigning json.RawMessage
}

// DeviceListUpdate is one m.device_list_update: a change to one device of
// another server's user, numbered so that a missed one shows.
type DeviceListUpdate struct {
	UserID, DeviceID, DisplayName string
	StreamID                      int64
	PrevID                        []int64
	Deleted                       bool
	Keys                          json.RawMessage
}

// cachedKeys answers a key query for a remote user from the kept device list, if
// there is one that is not stale: devices (all when empty) and cross-signing keys.
func (s *Service) cachedKeys(ctx context.Context, userID string, devices []string, allowStale bool) (map[string]json.RawMessage, json.RawMessage, json.RawMessage, bool, error) {
	var stale bool
	var streamID int64
	var master, selfSigning sql.NullString
	err := s.db.QueryRow(ctx, `SELECT stale, stream_id, master_key, self_signing_key FROM remote_device_lists WHERE user_id = $1`, userID).
		Scan(&stale, &streamID, &master, &selfSigning)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (streamID < 0 || stale && !allowStale)) {
		return nil, nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("read device list of %s: %w", userID, err)
	}
	rows, err := s.db.Query(ctx, `SELECT device_id, keys FROM remote_devices WHERE user_id = $1`, userID)
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("read devices of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var id, keys string
		if err := rows.Scan(&id, &keys); err != nil {
			return nil, nil, nil, false, err
		}
		if keys != "" && (len(devices) == 0 || slices.Contains(devices, id)) {
			out[id] = json.RawMessage(keys)
		}
	}
	raw := func(v sql.NullString) json.RawMessage {
		if v.Valid && v.String != "" {
			return json.RawMessage(v.String)
		}
		return nil
	}
	return out, raw(master), raw(selfSigning), true, rows.Err()
}

// deviceListChanges is the count of updates received for a remote user's list.
func (s *Service) deviceListChanges(ctx context.Context, userID string) int64 {
	var n int64
	s.db.QueryRow(ctx, `SELECT changes FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&n)
	return n
}

// storeDeviceList replaces the kept device list of a remote user with one fetched
// when changes updates had been received: if more arrived during the fetch, the
// list stays stale.
func (s *Service) storeDeviceList(ctx context.Context, userID string, list RemoteDeviceList, changes int64) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM remote_devices WHERE user_id = $1`, userID); err != nil {
			return err
		}
		for id, keys := range list.Devices {
			if _, err := tx.Exec(ctx, `INSERT INTO remote_devices (user_id, device_id, keys) VALUES ($1, $2, $3)`, userID, id, string(keys)); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, changes, master_key, self_signing_key) VALUES ($1, $2, FALSE, $5, $3, $4)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = remote_device_lists.changes <> $5,
			master_key = excluded.master_key, self_signing_key = excluded.self_signing_key`,
			userID, list.StreamID, nullable(list.Master), nullable(list.SelfSigning), changes)
		return err
	})
}

func nullable(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return string(raw)
}

// ApplyDeviceListUpdate applies another server's m.device_list_update to the kept
// list of its user: in order (its prev_id is the stream_id kept) it changes the
// one device; out of order, or without keys to apply, the list is marked stale and
// fetched again at the next query. Local users sharing a room are told either way.
func (s *Service) ApplyDeviceListUpdate(ctx context.Context, u DeviceListUpdate) error {
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var streamID int64
		var stale bool
		err := tx.QueryRow(ctx, `SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1`, u.UserID).Scan(&streamID, &stale)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			// Not kept yet: a placeholder (never fetched: stream_id -1) counts
			// the change, so a fetch under way does not take itself for current.
			if _, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, changes) VALUES ($1, -1, TRUE, 1)
				ON CONFLICT (user_id) DO UPDATE SET stale = TRUE, changes = remote_device_lists.changes + 1`, u.UserID); err != nil {
				return err
			}
		case err != nil:
			return err
		case !stale && u.DeviceID != "" && u.StreamID > streamID && slices.Contains(u.PrevID, streamID):
			if u.Deleted {
				if _, err := tx.Exec(ctx, `DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2`, u.UserID, u.DeviceID); err != nil {
					return err
				}
			} else {
				keys := string(u.Keys)
				if !gjson.Valid(keys) || !gjson.Parse(keys).IsObject() {
					keys = "{}"
				}
				if u.DisplayName != "" {
					keys, _ = sjson.Set(keys, "unsigned.device_display_name", u.DisplayName)
				}
				if _, err := tx.Exec(ctx, `INSERT INTO remote_devices (user_id, device_id, keys) VALUES ($1, $2, $3)
					ON CONFLICT (user_id, device_id) DO UPDATE SET keys = excluded.keys`, u.UserID, u.DeviceID, keys); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $2, changes = changes + 1 WHERE user_id = $1`, u.UserID, u.StreamID); err != nil {
				return err
			}
		case u.StreamID <= streamID && u.StreamID > 0:
			// Already applied (a retried transaction).
		default:
			if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stale = TRUE, changes = changes + 1 WHERE user_id = $1`, u.UserID); err != nil {
				return err
			}
		}
		return markDeviceListChange(ctx, tx, u.UserID)
	})
	if err == nil {
		s.notify(u.UserID)
	}
	return err
}

// SigningKeysChanged marks a remote user's kept list stale after a signing key
// update (m.signing_key_update), so the next query fetches the new keys.
func (s *Service) SigningKeysChanged(ctx context.Context, userID string) error {
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stale = TRUE, changes = changes + 1 WHERE user_id = $1`, userID); err != nil {
			return err
		}
		return markDeviceListChange(ctx, tx, userID)
	})
	if err == nil {
		s.notify(userID)
	}
	return err
}

// ForgetDeviceList drops the kept list of a remote user no local user shares a
// room with any more: no updates will arrive to keep it true.
func (s *Service) ForgetDeviceList(ctx context.Context, userID string) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM remote_devices WHERE user_id = $1`, userID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM remote_device_lists WHERE user_id = $1`, userID)
		return err
	})
}

// DeviceListsMaybeChanged marks the kept lists of remote users stale: they
// started sharing a room with this server again (their updates may have been
// missed while they did not) and are fetched anew at the next query.
func (s *Service) DeviceListsMaybeChanged(ctx context.Context, userIDs []string) error {
	for start := 0; start < len(userIDs); start += 500 {
		batch := userIDs[start:min(start+500, len(userIDs))]
		marks, args := storage.InList(batch)
		if _, err := s.db.Exec(ctx, `UPDATE remote_device_lists SET stale = TRUE, changes = changes + 1 WHERE user_id IN (`+marks+`)`, args...); err != nil {
			return fmt.Errorf("mark device lists stale: %w", err)
		}
	}
	return nil
}

// cachedOrFetched answers a key query for one remote user from the kept device
// list, fetching the whole list first when none is kept or it is stale; with the
// user's server unreachable, a stale list is still better than none. ok is false
// when neither is to be had (the caller asks the server's /user/keys/query).
func (s *Service) cachedOrFetched(ctx context.Context, userID string, devices []string) (keys map[string]json.RawMessage, master, selfSigning json.RawMessage, ok bool) {
	tracked, err := s.remote.SharesRoom(ctx, userID)
	if err != nil {
		return nil, nil, nil, false
	}
	if !tracked {
		// No updates arrive for users no local user shares a room with: a list
		// kept from before would go stale unseen. (Read first: most such users
		// never had one, and a key query should not write.)
		var kept int
		if s.db.QueryRow(ctx, `SELECT 1 FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&kept) == nil {
			s.ForgetDeviceList(ctx, userID)
		}
		return nil, nil, nil, false
	}
	if keys, master, selfSigning, ok, err = s.cachedKeys(ctx, userID, devices, false); err != nil || ok {
		return keys, master, selfSigning, err == nil
	}
	changes := s.deviceListChanges(ctx, userID)
	fctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	list, err := s.remote.UserDevices(fctx, userID)
	cancel()
	if err == nil {
		// A failed store still answers from what is kept (stale is better than
		// nothing for key queries); the next query tries again.
		if err := s.storeDeviceList(ctx, userID, list, changes); err != nil {
			slog.Warn("e2ee: store remote device list", "user", userID, "err", err)
		}
	}
	keys, master, selfSigning, ok, rerr := s.cachedKeys(ctx, userID, devices, true)
	return keys, master, selfSigning, ok && rerr == nil
}
