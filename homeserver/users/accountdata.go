package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// SetAccountData stores content under type for the user, globally (roomID "") or for
// one room, and returns the account data stream position of the write.
func (s *Service) SetAccountData(ctx context.Context, localpart, roomID, typ string, content json.RawMessage) (int64, error) {
	var pos int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if err := tx.NextStreamPos(ctx, "account_data", &pos); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO account_data (localpart, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (localpart, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
			localpart, roomID, typ, string(content), pos)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("set account data %s of %q: %w", typ, localpart, err)
	}
	if s.cfg.Bus != nil {
		data, _ := json.Marshal(AccountDataNotice{UserID: s.UserID(localpart), StreamPos: pos})
		if err := s.cfg.Bus.Publish(AccountDataSubject, data); err != nil {
			// Committed already; a lost wake-up only delays a waiting sync.
			slog.Warn("publish account data notice", "err", err)
		}
	}
	return pos, nil
}

// AccountDataItem is one item of account data; RoomID is empty for global data.
type AccountDataItem struct {
	RoomID  string
	Type    string
	Content json.RawMessage
}

// AccountDataSince returns the user's account data written after position since,
// up to upTo.
func (s *Service) AccountDataSince(ctx context.Context, localpart string, since, upTo int64) ([]AccountDataItem, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, type, content FROM account_data WHERE localpart = $1 AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos`, localpart, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("account data of %q: %w", localpart, err)
	}
	defer rows.Close()
	var out []AccountDataItem
	for rows.Next() {
		var it AccountDataItem
		var content string
		if err := rows.Scan(&it.RoomID, &it.Type, &content); err != nil {
			return nil, err
		}
		it.Content = json.RawMessage(content)
		out = append(out, it)
	}
	return out, rows.Err()
}

// AccountDataPosition is the latest committed account data position.
func (s *Service) AccountDataPosition(ctx context.Context) (int64, error) {
	var pos int64
	err := s.db.StreamPos(ctx, "account_data", &pos)
	return pos, err
}

// AccountData returns one item of account data, or ErrNotFound.
func (s *Service) AccountData(ctx context.Context, localpart, roomID, typ string) (json.RawMessage, error) {
	var content string
	err := s.db.QueryRow(ctx, `SELECT content FROM account_data WHERE localpart = $1 AND room_id = $2 AND type = $3`,
		localpart, roomID, typ).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read account data %s of %q: %w", typ, localpart, err)
	}
	return json.RawMessage(content), nil
}

// CreateFilter stores a sync filter (already validated) and returns its ID. IDs count
// up per user; concurrent creates may pick the same next ID, so losers retry, each
// round letting at least one through.
func (s *Service) CreateFilter(ctx context.Context, localpart string, filter json.RawMessage) (string, error) {
	var id int64
	var err error
	for attempt := 0; attempt < 100; attempt++ {
		err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE localpart = $1`, localpart).Scan(&id); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO filters (localpart, filter_id, content) VALUES ($1, $2, $3)`, localpart, id, string(filter))
			return err
		})
		if !storage.IsUniqueViolation(err) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("create filter for %q: %w", localpart, err)
	}
	return fmt.Sprint(id), nil
}

// Filter returns a stored filter, or ErrNotFound.
func (s *Service) Filter(ctx context.Context, localpart string, id int64) (json.RawMessage, error) {
	var content string
	err := s.db.QueryRow(ctx, `SELECT content FROM filters WHERE localpart = $1 AND filter_id = $2`, localpart, id).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read filter %d of %q: %w", id, localpart, err)
	}
	return json.RawMessage(content), nil
}

// GlobalAccountDataOf returns the global account data of the given types for many
// users at once, by localpart and then type; users with none are left out. The
// push evaluator loads the rules of a large room's members with it.
func (s *Service) GlobalAccountDataOf(ctx context.Context, localparts, types []string) (map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]json.RawMessage{}
	if len(types) == 0 {
		return out, nil
	}
	typeMarks, typeArgs := storage.InList(types)
	for start := 0; start < len(localparts); start += 500 {
		batch := localparts[start:min(start+500, len(localparts))]
		args := append([]any{}, typeArgs...)
		marks := make([]string, len(batch))
		for i, l := range batch {
			args = append(args, l)
			marks[i] = fmt.Sprintf("$%d", len(args))
		}
		rows, err := s.db.Query(ctx, `SELECT localpart, type, content FROM account_data WHERE room_id = '' AND type IN (`+typeMarks+`)
			AND localpart IN (`+strings.Join(marks, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("account data of %d users: %w", len(batch), err)
		}
		for rows.Next() {
			var local, typ, content string
			if err := rows.Scan(&local, &typ, &content); err != nil {
				rows.Close()
				return nil, fmt.Errorf("account data of %d users: %w", len(batch), err)
			}
			if out[local] == nil {
				out[local] = map[string]json.RawMessage{}
			}
			out[local][typ] = json.RawMessage(content)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("account data of %d users: %w", len(batch), err)
		}
	}
	return out, nil
}

// RoomUpgraded carries a user's own view of a room over to its replacement after an
// upgrade, as Synapse does for the upgrader: the room's tags, and its place in
// m.direct (the new room joins every list the old one is in).
func (s *Service) RoomUpgraded(ctx context.Context, userID, oldRoomID, newRoomID string) error {
	local, ok := s.LocalpartOf(userID)
	if !ok {
		return nil
	}
	tags, err := s.RoomTags(ctx, local, oldRoomID)
	if err != nil {
		return err
	}
	for tag, content := range tags {
		var c map[string]json.RawMessage
		if json.Unmarshal(content, &c) != nil {
			continue
		}
		if err := s.SetRoomTag(ctx, local, newRoomID, tag, c); err != nil {
			return err
		}
	}
	raw, err := s.AccountData(ctx, local, "", "m.direct")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var direct map[string][]string
	if json.Unmarshal(raw, &direct) != nil {
		return nil // not ours to repair
	}
	changed := false
	for user, rooms := range direct {
		if slices.Contains(rooms, oldRoomID) && !slices.Contains(rooms, newRoomID) {
			direct[user] = append(rooms, newRoomID)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	content, err := json.Marshal(direct)
	if err != nil {
		return err
	}
	_, err = s.SetAccountData(ctx, local, "", "m.direct", content)
	return err
}
