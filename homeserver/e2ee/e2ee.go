// Package e2ee stores what end-to-end encryption needs from a server: device keys,
// one-time and fallback keys, device list changes, and to-device messages. The server
// checks signatures and shapes; it never sees plaintext.
package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Subject is the NATS subject a Notice is published on after a change a sync may
// need to deliver (new to-device message, device list change).
const Subject = "hongyan.e2ee"

// Notice names the user whose sync has something new.
type Notice struct {
	UserID string `json:"user_id"`
	// DeviceList is set when the user's devices or cross-signing keys changed (as
	// opposed to a to-device message for them), which other servers must hear of.
	DeviceList bool `json:"device_list,omitempty"`
	// DeviceID names the device that changed, when one did (new keys, a new or
	// renamed device, a deletion: Deleted); StreamID is the change's position in
	// the user's device list and PrevID the one before it (0: none), which other
	// servers' m.device_list_update carries so they notice a missed update.
	DeviceID string `json:"device_id,omitempty"`
	Deleted  bool   `json:"deleted,omitempty"`
	StreamID int64  `json:"stream_id,omitempty"`
	PrevID   int64  `json:"prev_id,omitempty"`
}

// Service is the key store. It is safe for concurrent use.
type Service struct {
	db  *storage.DB
	bus *nats.Conn
	// remote reaches other servers' users; nil without federation.
	remote Remote
}

// New returns the service; bus may be nil.
func New(db *storage.DB, bus *nats.Conn) *Service { return &Service{db: db, bus: bus} }

func (s *Service) notify(userIDs ...string) { s.publish(false, userIDs...) }

// deviceListChanged announces changes of the users' devices or cross-signing keys.
func (s *Service) deviceListChanged(userIDs ...string) { s.publish(true, userIDs...) }

// deviceChanged announces the change of one device, at position pos after prev.
func (s *Service) deviceChanged(userID, deviceID string, deleted bool, pos, prev int64) {
	if s.bus == nil {
		return
	}
	data, _ := json.Marshal(Notice{UserID: userID, DeviceList: true, DeviceID: deviceID, Deleted: deleted, StreamID: pos, PrevID: prev})
	if err := s.bus.Publish(Subject, data); err != nil {
		slog.Warn("publish e2ee notice", "err", err)
	}
}

func (s *Service) publish(deviceList bool, userIDs ...string) {
	if s.bus == nil {
		return
	}
	for _, u := range userIDs {
		data, _ := json.Marshal(Notice{UserID: u, DeviceList: deviceList})
		if err := s.bus.Publish(Subject, data); err != nil {
			slog.Warn("publish e2ee notice", "err", err)
		}
	}
}

// Upload is the body of /keys/upload.
type Upload struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

type deviceKeys struct {
	UserID     *string                      `json:"user_id"`
	DeviceID   *string                      `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// parseDeviceKeys checks the shape the spec gives device_keys (every field present,
// of its type) and that they are the caller's device's. Signatures are the
// clients' to verify, as in Synapse and Dendrite: a server that refused unsigned or
// oddly encoded keys would only stand between clients that accept them.
func parseDeviceKeys(raw json.RawMessage, userID, deviceID string) error {
	var dk deviceKeys
	if err := json.Unmarshal(raw, &dk); err != nil {
		return mxerror.New(mxerror.BadJSON, "device_keys: %v", err)
	}
	switch {
	case dk.UserID == nil || dk.DeviceID == nil:
		return mxerror.New(mxerror.BadJSON, "device_keys need user_id and device_id")
	case dk.Algorithms == nil || dk.Keys == nil || dk.Signatures == nil:
		return mxerror.New(mxerror.BadJSON, "device_keys need algorithms, keys and signatures")
	case *dk.UserID != userID || *dk.DeviceID != deviceID:
		return mxerror.New(mxerror.InvalidParam, "device_keys must be for %s device %s", userID, deviceID)
	}
	for id := range dk.Keys {
		if alg, _, ok := strings.Cut(id, ":"); !ok || alg == "" {
			return mxerror.New(mxerror.BadJSON, "device key ID %q must be algorithm:device_id", id)
		}
	}
	return nil
}

// UploadKeys stores a device's keys and returns its one-time key counts. Device keys
// must have the spec's shape and be the caller's device's; an identical re-upload
// changes nothing, a different one replaces the keys and moves the device list.
func (s *Service) UploadKeys(ctx context.Context, userID, deviceID string, up Upload) (map[string]int, error) {
	changedDevice := false
	if len(up.DeviceKeys) > 0 && string(up.DeviceKeys) != "null" {
		if err := parseDeviceKeys(up.DeviceKeys, userID, deviceID); err != nil {
			return nil, err
		}
		var existing string
		err := s.db.QueryRow(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&existing)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			changedDevice = true
		case err != nil:
			return nil, fmt.Errorf("read device keys: %w", err)
		case !sameKeys(existing, up.DeviceKeys):
			// Replaced, as Synapse does, and announced: the keys were never
			// vouched for by the server, so refusing a change protects no one.
			changedDevice = true
		}
	}
	var pos, prev int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if changedDevice {
			if _, err := tx.Exec(ctx, `INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, userID, deviceID, string(up.DeviceKeys)); err != nil {
				return fmt.Errorf("store device keys: %w", err)
			}
			var err error
			if pos, prev, err = markDeviceChange(ctx, tx, userID); err != nil {
				return err
			}
		}
		for id, key := range up.OneTimeKeys {
			alg, _, ok := strings.Cut(id, ":")
			if !ok || alg == "" {
				return mxerror.New(mxerror.InvalidParam, "one-time key ID %q must be algorithm:id", id)
			}
			if !json.Valid(key) {
				return mxerror.New(mxerror.BadJSON, "one-time key %q is not JSON", id)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, key_json) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id, device_id, key_id) DO NOTHING`, userID, deviceID, id, alg, string(key)); err != nil {
				return fmt.Errorf("store one-time key: %w", err)
			}
		}
		for id, key := range up.FallbackKeys {
			alg, _, ok := strings.Cut(id, ":")
			if !ok || alg == "" {
				return mxerror.New(mxerror.InvalidParam, "fallback key ID %q must be algorithm:id", id)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE`,
				userID, deviceID, alg, id, string(key)); err != nil {
				return fmt.Errorf("store fallback key: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changedDevice {
		s.deviceChanged(userID, deviceID, false, pos, prev)
	}
	return s.OneTimeKeyCounts(ctx, userID, deviceID)
}

// sameKeys compares two device key objects ignoring formatting and unsigned.
func sameKeys(a string, b json.RawMessage) bool {
	strip := func(raw []byte) string {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return string(raw)
		}
		delete(m, "unsigned")
		out, _ := json.Marshal(m)
		canon, err := gomatrixserverlib.CanonicalJSON(out)
		if err != nil {
			return string(out)
		}
		return string(canon)
	}
	return strip([]byte(a)) == strip(b)
}

// markDeviceListChange moves the user's device list position inside tx.
func markDeviceListChange(ctx context.Context, tx *storage.Tx, userID string) error {
	_, _, err := markDeviceChange(ctx, tx, userID)
	return err
}

// markDeviceChange moves the user's device list position inside tx and returns the
// new position and the one before it (0 if none).
func markDeviceChange(ctx context.Context, tx *storage.Tx, userID string) (pos, prev int64, err error) {
	if err := tx.QueryRow(ctx, `SELECT stream_pos FROM device_list_changes WHERE user_id = $1`, userID).Scan(&prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, 0, fmt.Errorf("device list position of %s: %w", userID, err)
	}
	if err := tx.NextStreamPos(ctx, "device_lists", &pos); err != nil {
		return 0, 0, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO device_list_changes (user_id, stream_pos, own_pos) VALUES ($1, $2, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos, own_pos = excluded.own_pos`, userID, pos)
	return pos, prev, err
}

// markOwnDeviceListChange moves the user's device list position for their own
// devices only (a change no one else may see, such as a new user-signing key).
func markOwnDeviceListChange(ctx context.Context, tx *storage.Tx, userID string) error {
	var pos int64
	if err := tx.NextStreamPos(ctx, "device_lists", &pos); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO device_list_changes (user_id, stream_pos, own_pos) VALUES ($1, 0, $2)
		ON CONFLICT (user_id) DO UPDATE SET own_pos = excluded.own_pos`, userID, pos)
	return err
}

// OwnDevicesChanged reports whether anything the user's own devices must refetch
// changed between since and upTo: their devices, device keys or cross-signing keys,
// the private ones included. A user is always told about their own devices, also
// when they share no room with anyone (Synapse does the same), so that a second
// client of a fresh account sees the first one's keys.
func (s *Service) OwnDevicesChanged(ctx context.Context, userID string, since, upTo int64) (bool, error) {
	if since >= upTo {
		return false, nil
	}
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM device_list_changes WHERE user_id = $1 AND own_pos > $2 AND own_pos <= $3`, userID, since, upTo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("own device list changes of %s: %w", userID, err)
	}
	return true, nil
}

// DeviceListChanged records and announces a change of one of the user's devices
// made elsewhere (a new device logged in, a device renamed).
func (s *Service) DeviceListChanged(ctx context.Context, userID, deviceID string) error {
	var pos, prev int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) (err error) {
		pos, prev, err = markDeviceChange(ctx, tx, userID)
		return err
	})
	if err != nil {
		return fmt.Errorf("device list of %s: %w", userID, err)
	}
	s.deviceChanged(userID, deviceID, false, pos, prev)
	return nil
}

// DeviceDeleted removes a deleted device's keys and pending messages and announces
// the change.
func (s *Service) DeviceDeleted(ctx context.Context, userID, deviceID string) error {
	var pos, prev int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, q := range []string{
			`DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM to_device WHERE user_id = $1 AND device_id = $2`,
		} {
			if _, err := tx.Exec(ctx, q, userID, deviceID); err != nil {
				return fmt.Errorf("forget device %s: %w", deviceID, err)
			}
		}
		var err error
		pos, prev, err = markDeviceChange(ctx, tx, userID)
		return err
	})
	if err == nil {
		s.deviceChanged(userID, deviceID, true, pos, prev)
	}
	return err
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys per algorithm.
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys: %w", err)
	}
	defer rows.Close()
	out := map[string]int{"signed_curve25519": 0}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// UnusedFallbackKeyTypes lists the algorithms with an unused fallback key.
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("fallback key types: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, err
		}
		out = append(out, alg)
	}
	return out, rows.Err()
}

// QueryKeys returns the device keys of the users asked for (all devices when the
// list is empty). Users of other servers are reported in failures until federation
// exists.
func (s *Service) QueryKeys(ctx context.Context, serverName string, want map[string][]string) (map[string]map[string]json.RawMessage, map[string]any, error) {
	out := map[string]map[string]json.RawMessage{}
	failures := map[string]any{}
	for userID, devices := range want {
		if !strings.HasSuffix(userID, ":"+serverName) {
			_, domain, _ := strings.Cut(userID, ":")
			failures[domain] = map[string]string{"status": "503", "message": "federation is not available yet"}
			continue
		}
		rows, err := s.db.Query(ctx, `SELECT device_id, key_json FROM device_keys WHERE user_id = $1`, userID)
		if err != nil {
			return nil, nil, fmt.Errorf("query keys of %s: %w", userID, err)
		}
		byDevice := map[string]json.RawMessage{}
		for rows.Next() {
			var dev, raw string
			if err := rows.Scan(&dev, &raw); err != nil {
				rows.Close()
				return nil, nil, err
			}
			if len(devices) == 0 || contains(devices, dev) {
				byDevice[dev] = withUnsigned(json.RawMessage(raw))
			}
		}
		rows.Close()
		for dev, raw := range byDevice {
			// Cross-signing signatures of the device are served with its keys.
			if byDevice[dev], err = s.withSignatures(ctx, userID, dev, raw, ""); err != nil {
				return nil, nil, err
			}
		}
		out[userID] = byDevice
	}
	return out, failures, nil
}

// withUnsigned gives device keys the unsigned object the spec's /keys/query
// answer has (clients read unsigned.device_display_name from it).
func withUnsigned(raw json.RawMessage) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || obj == nil || obj["unsigned"] != nil {
		return raw
	}
	obj["unsigned"] = json.RawMessage(`{}`)
	out, err := json.Marshal(obj)
	if err != nil {
		return raw
	}
	return out
}

// ClaimKeys hands out one key per requested (user, device, algorithm): a one-time key
// if any is left (and deletes it), else the fallback key (kept, marked used), else
// nothing. Two concurrent claimers never receive the same one-time key.
func (s *Service) ClaimKeys(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]map[string]json.RawMessage{}
	for userID, devices := range want {
		for deviceID, alg := range devices {
			keyID, key, err := s.claimOne(ctx, userID, deviceID, alg)
			if err != nil {
				return nil, err
			}
			if keyID == "" {
				continue
			}
			if out[userID] == nil {
				out[userID] = map[string]map[string]json.RawMessage{}
			}
			out[userID][deviceID] = map[string]json.RawMessage{keyID: key}
		}
	}
	return out, nil
}

func (s *Service) claimOne(ctx context.Context, userID, deviceID, alg string) (string, json.RawMessage, error) {
	// Pick a candidate and delete exactly it: if another claimer deleted it first,
	// the DELETE returns no row and we try again. Every miss means someone else took
	// a key, so the loop ends once the keys run out. Claimers start at different
	// offsets so that they rarely race for the same row.
	for attempt := 0; ; attempt++ {
		var keyID string
		offset := attempt % 4
		err := s.db.QueryRow(ctx, `SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1 OFFSET $4`,
			userID, deviceID, alg, offset).Scan(&keyID)
		if errors.Is(err, sql.ErrNoRows) {
			if offset != 0 {
				continue // fewer keys than the offset: look from the first
			}
			break // none left
		}
		if err != nil {
			return "", nil, fmt.Errorf("claim one-time key: %w", err)
		}
		var raw string
		err = s.db.WriteQueryRow(ctx, `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3 RETURNING key_json`,
			userID, deviceID, keyID).Scan(&raw)
		if errors.Is(err, sql.ErrNoRows) {
			continue // someone else got it
		}
		if err != nil {
			return "", nil, fmt.Errorf("claim one-time key: %w", err)
		}
		return keyID, json.RawMessage(raw), nil
	}
	var keyID, raw string
	err := s.db.WriteQueryRow(ctx, `UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 RETURNING key_id, key_json`,
		userID, deviceID, alg).Scan(&keyID, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("claim fallback key: %w", err)
	}
	return keyID, json.RawMessage(raw), nil
}

// DeviceListPosition is the latest committed device list position.
func (s *Service) DeviceListPosition(ctx context.Context) (int64, error) {
	var pos int64
	err := s.db.StreamPos(ctx, "device_lists", &pos)
	return pos, err
}

// ChangedUsers returns which of users changed their device list after since, up to
// upTo. It reads the changes in the range once rather than each user's row: a sync
// asks about everyone it shares a room with, and few of them changed.
func (s *Service) ChangedUsers(ctx context.Context, users []string, since, upTo int64) ([]string, error) {
	if since >= upTo || len(users) == 0 {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT user_id FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2`, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("device list changes: %w", err)
	}
	defer rows.Close()
	changed := map[string]bool{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		changed[u] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("device list changes: %w", err)
	}
	var out []string
	for _, u := range users {
		if changed[u] {
			out = append(out, u)
		}
	}
	return out, nil
}

// SendToDevice queues messages: messages[user][device] = content, device "*" meaning
// all of the user's devices. A repeated (sender device, txnID) is a no-op.
func (s *Service) SendToDevice(ctx context.Context, sender, senderDevice, txnID, evType string, messages map[string]map[string]json.RawMessage, serverName string) error {
	var targets []string
	remote := map[string]map[string]map[string]json.RawMessage{} // server → user → device → content
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		clear(remote)
		res, err := tx.Exec(ctx, `INSERT INTO to_device_txns (sender, sender_device, txn_id, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (sender, sender_device, txn_id) DO NOTHING`, sender, senderDevice, txnID, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("record to-device transaction: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // already delivered
		}
		for userID, byDevice := range messages {
			if !strings.HasSuffix(userID, ":"+serverName) {
				if _, server, ok := strings.Cut(userID, ":"); ok && s.remote != nil {
					if remote[server] == nil {
						remote[server] = map[string]map[string]json.RawMessage{}
					}
					remote[server][userID] = byDevice
				}
				continue
			}
			for deviceID, content := range byDevice {
				devices := []string{deviceID}
				if deviceID == "*" {
					if devices, err = userDevices(ctx, tx, userID); err != nil {
						return err
					}
				}
				for _, d := range devices {
					var id int64
					if err := tx.NextStreamPos(ctx, "to_device", &id); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `INSERT INTO to_device (id, user_id, device_id, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
						id, userID, d, sender, evType, string(content)); err != nil {
						return fmt.Errorf("queue to-device message: %w", err)
					}
				}
				targets = append(targets, userID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.notify(targets...)
	for server, msgs := range remote {
		// Queued durably before the client hears success.
		if err := s.remote.SendToDeviceRemote(ctx, server, sender, evType, sender+"/"+senderDevice+"/"+txnID, msgs); err != nil {
			return err
		}
	}
	return nil
}

func userDevices(ctx context.Context, tx *storage.Tx, userID string) ([]string, error) {
	local := strings.TrimPrefix(userID[:strings.IndexByte(userID, ':')], "@")
	rows, err := tx.Query(ctx, `SELECT device_id FROM devices WHERE localpart = $1`, local)
	if err != nil {
		return nil, fmt.Errorf("devices of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ToDevicePosition is the latest committed to-device position.
func (s *Service) ToDevicePosition(ctx context.Context) (int64, error) {
	var pos int64
	err := s.db.StreamPos(ctx, "to_device", &pos)
	return pos, err
}

// ToDeviceMessage is one delivered message.
type ToDeviceMessage struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// TakeToDevice first deletes the device's messages up to acked (the client's since
// token proves it has them), then returns those after acked up to upTo (at most
// limit), and the position of the last one returned.
func (s *Service) TakeToDevice(ctx context.Context, userID, deviceID string, acked, upTo int64, limit int) ([]ToDeviceMessage, int64, error) {
	if acked > 0 {
		if _, err := s.db.Exec(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND id <= $3`, userID, deviceID, acked); err != nil {
			return nil, 0, fmt.Errorf("delete delivered to-device messages: %w", err)
		}
	}
	rows, err := s.db.Query(ctx, `SELECT id, sender, type, content FROM to_device WHERE user_id = $1 AND device_id = $2 AND id > $3 AND id <= $4
		ORDER BY id LIMIT $5`, userID, deviceID, acked, upTo, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("read to-device messages: %w", err)
	}
	defer rows.Close()
	out := []ToDeviceMessage{}
	last := upTo
	for rows.Next() {
		var m ToDeviceMessage
		var content string
		var id int64
		if err := rows.Scan(&id, &m.Sender, &m.Type, &content); err != nil {
			return nil, 0, err
		}
		m.Content = json.RawMessage(content)
		out = append(out, m)
		last = id
	}
	if len(out) < limit {
		last = upTo
	}
	return out, last, rows.Err()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
