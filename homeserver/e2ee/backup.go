package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// BackupVersion is a key backup version as /room_keys/version shows it.
type BackupVersion struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int             `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// KeyBackupData is one backed-up session.
type KeyBackupData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// CreateBackup starts a new backup version, which becomes the current one.
func (s *Service) CreateBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	if algorithm == "" || len(authData) == 0 {
		return "", mxerror.New(mxerror.MissingParam, "algorithm and auth_data are required")
	}
	var v int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM key_backup_versions WHERE user_id = $1`, userID).Scan(&v); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
			userID, v, algorithm, string(authData))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create key backup: %w", err)
	}
	return strconv.FormatInt(v, 10), nil
}

// currentVersion is the user's newest undeleted backup version; 0 if none.
func currentVersion(ctx context.Context, q func(context.Context, string, ...any) *sql.Row, userID string) (int64, error) {
	var v sql.NullInt64
	err := q(ctx, `SELECT MAX(version) FROM key_backup_versions WHERE user_id = $1 AND deleted = FALSE`, userID).Scan(&v)
	return v.Int64, err
}

func parseVersion(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, mxerror.New(mxerror.NotFound, "unknown backup version %q", v)
	}
	return n, nil
}

// Backup returns a backup version ("" for the current one).
func (s *Service) Backup(ctx context.Context, userID, version string) (BackupVersion, error) {
	var v int64
	var err error
	if version == "" {
		if v, err = currentVersion(ctx, s.db.QueryRow, userID); err != nil {
			return BackupVersion{}, fmt.Errorf("current backup: %w", err)
		}
		if v == 0 {
			return BackupVersion{}, mxerror.New(mxerror.NotFound, "no current backup version")
		}
	} else if v, err = parseVersion(version); err != nil {
		return BackupVersion{}, err
	}
	b := BackupVersion{Version: strconv.FormatInt(v, 10)}
	var auth string
	var etag int64
	err = s.db.QueryRow(ctx, `SELECT algorithm, auth_data, etag FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND deleted = FALSE`,
		userID, v).Scan(&b.Algorithm, &auth, &etag)
	if errors.Is(err, sql.ErrNoRows) {
		return BackupVersion{}, mxerror.New(mxerror.NotFound, "unknown backup version %q", version)
	}
	if err != nil {
		return BackupVersion{}, fmt.Errorf("read backup: %w", err)
	}
	b.AuthData, b.ETag = json.RawMessage(auth), strconv.FormatInt(etag, 10)
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, userID, v).Scan(&b.Count); err != nil {
		return BackupVersion{}, err
	}
	return b, nil
}

// UpdateBackup replaces a version's auth_data; the algorithm may not change.
func (s *Service) UpdateBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage) error {
	v, err := parseVersion(version)
	if err != nil {
		return err
	}
	cur, err := s.Backup(ctx, userID, version)
	if err != nil {
		return err
	}
	if algorithm != cur.Algorithm {
		return mxerror.New(mxerror.InvalidParam, "algorithm may not change")
	}
	_, err = s.db.Exec(ctx, `UPDATE key_backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3`, string(authData), userID, v)
	return err
}

// DeleteBackup deletes a version and its keys.
func (s *Service) DeleteBackup(ctx context.Context, userID, version string) error {
	v, err := parseVersion(version)
	if err != nil {
		return err
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE key_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, v)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mxerror.New(mxerror.NotFound, "unknown backup version %q", version)
		}
		_, err = tx.Exec(ctx, `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, userID, v)
		return err
	})
}

// BackupKeys is rooms → sessions → data, as /room_keys/keys carries it.
type BackupKeys map[string]map[string]KeyBackupData

// PutKeys stores sessions into the current version, keeping an existing session when
// it is better: verified over unverified, then the lower first_message_index, then
// the lower forwarded_count. A version other than the current one is refused with
// M_WRONG_ROOM_KEYS_VERSION.
func (s *Service) PutKeys(ctx context.Context, userID, version string, keys BackupKeys) (etag string, count int, err error) {
	v, err := parseVersion(version)
	if err != nil {
		return "", 0, err
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		cur, err := currentVersion(ctx, tx.QueryRow, userID)
		if err != nil {
			return err
		}
		if cur != v {
			e := mxerror.New(mxerror.WrongRoomKeysVersion, "version %s is not the current backup version", version)
			e.Extra = map[string]any{"current_version": strconv.FormatInt(cur, 10)}
			return e
		}
		changed := false
		for roomID, sessions := range keys {
			for sessionID, d := range sessions {
				if len(d.SessionData) == 0 {
					return mxerror.New(mxerror.BadJSON, "session %s lacks session_data", sessionID)
				}
				var old KeyBackupData
				err := tx.QueryRow(ctx, `SELECT first_message_index, forwarded_count, is_verified FROM key_backup_sessions
					WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, userID, v, roomID, sessionID).
					Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified)
				if err == nil && !better(d, old) {
					continue
				}
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO key_backup_sessions (user_id, version, room_id, session_id, first_message_index,
					forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
					ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
					forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
					userID, v, roomID, sessionID, d.FirstMessageIndex, d.ForwardedCount, d.IsVerified, string(d.SessionData)); err != nil {
					return err
				}
				changed = true
			}
		}
		if changed {
			_, err = tx.Exec(ctx, `UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, v)
		}
		return err
	})
	if err != nil {
		return "", 0, err
	}
	b, err := s.Backup(ctx, userID, version)
	return b.ETag, b.Count, err
}

// better reports whether the new session should replace the stored one.
func better(n, old KeyBackupData) bool {
	if n.IsVerified != old.IsVerified {
		return n.IsVerified
	}
	if n.FirstMessageIndex != old.FirstMessageIndex {
		return n.FirstMessageIndex < old.FirstMessageIndex
	}
	return n.ForwardedCount < old.ForwardedCount
}

// Keys returns the backed-up sessions of a version, narrowed to a room and session
// when given.
func (s *Service) Keys(ctx context.Context, userID, version, roomID, sessionID string) (BackupKeys, error) {
	if _, err := s.Backup(ctx, userID, version); err != nil {
		return nil, err
	}
	v, _ := parseVersion(version)
	rows, err := s.db.Query(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM key_backup_sessions WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)`,
		userID, v, roomID, sessionID)
	if err != nil {
		return nil, fmt.Errorf("read backup keys: %w", err)
	}
	defer rows.Close()
	out := BackupKeys{}
	for rows.Next() {
		var room, sid, data string
		var d KeyBackupData
		if err := rows.Scan(&room, &sid, &d.FirstMessageIndex, &d.ForwardedCount, &d.IsVerified, &data); err != nil {
			return nil, err
		}
		d.SessionData = json.RawMessage(data)
		if out[room] == nil {
			out[room] = map[string]KeyBackupData{}
		}
		out[room][sid] = d
	}
	return out, rows.Err()
}

// DeleteKeys deletes sessions of a version (all, a room's, or one).
func (s *Service) DeleteKeys(ctx context.Context, userID, version, roomID, sessionID string) (string, int, error) {
	if _, err := s.Backup(ctx, userID, version); err != nil {
		return "", 0, err
	}
	v, _ := parseVersion(version)
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3)
			AND ($4 = '' OR session_id = $4)`, userID, v, roomID, sessionID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, v)
		return err
	})
	if err != nil {
		return "", 0, fmt.Errorf("delete backup keys: %w", err)
	}
	b, err := s.Backup(ctx, userID, version)
	return b.ETag, b.Count, err
}
