// Package receipts stores read receipts (m.read, m.read.private, threaded) and hands
// sync the ones written after a stream position.
package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Subject is the NATS subject a Notice is published on after every receipt.
const Subject = "hongyan.receipts"

// Notice says a receipt was stored at a stream position.
type Notice struct {
	RoomID    string `json:"room_id"`
	StreamPos int64  `json:"stream_pos"`
}

// Types are the receipt types clients may send.
var Types = map[string]bool{"m.read": true, "m.read.private": true}

// Receipt is one stored receipt.
type Receipt struct {
	RoomID, UserID, Type, ThreadID, EventID string
	TS                                      int64
	StreamPos                               int64
}

// Service stores receipts.
type Service struct {
	db  *storage.DB
	bus *nats.Conn
}

// New returns the service; bus may be nil.
func New(db *storage.DB, bus *nats.Conn) *Service { return &Service{db: db, bus: bus} }

// Put records that user read up to eventID in the room (in thread, if not empty).
func (s *Service) Put(ctx context.Context, roomID, userID, typ, threadID, eventID string) error {
	if !Types[typ] {
		return mxerror.New(mxerror.InvalidParam, "unknown receipt type %q", typ)
	}
	var pos int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := tx.NextStreamPos(ctx, "receipts", &pos); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET
			event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos`,
			roomID, userID, typ, threadID, eventID, time.Now().UnixMilli(), pos)
		return err
	})
	if err != nil {
		return fmt.Errorf("store receipt: %w", err)
	}
	if s.bus != nil {
		data, _ := json.Marshal(Notice{RoomID: roomID, StreamPos: pos})
		if err := s.bus.Publish(Subject, data); err != nil {
			slog.Warn("publish receipt notice", "err", err)
		}
	}
	return nil
}

// Position is the latest committed receipt position.
func (s *Service) Position(ctx context.Context) (int64, error) {
	var pos int64
	err := s.db.StreamPos(ctx, "receipts", &pos)
	return pos, err
}

// Since returns the receipts in rooms written after since, up to upTo. Private
// receipts are returned only when they are forUser's own.
func (s *Service) Since(ctx context.Context, roomIDs []string, forUser string, since, upTo int64) (map[string][]Receipt, error) {
	out := map[string][]Receipt{}
	if len(roomIDs) == 0 || since >= upTo {
		return out, nil
	}
	if since > 0 {
		return s.sinceByRange(ctx, roomIDs, forUser, since, upTo)
	}
	for _, roomID := range roomIDs {
		rows, err := s.db.Query(ctx, `SELECT user_id, receipt_type, thread_id, event_id, ts, stream_pos FROM receipts
			WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND (receipt_type <> 'm.read.private' OR user_id = $4)`,
			roomID, since, upTo, forUser)
		if err != nil {
			return nil, fmt.Errorf("receipts since %d: %w", since, err)
		}
		for rows.Next() {
			r := Receipt{RoomID: roomID}
			if err := rows.Scan(&r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
				rows.Close()
				return nil, err
			}
			out[roomID] = append(out[roomID], r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sinceByRange serves an incremental read: the receipts in the range are few, so
// they are read once and kept for the wanted rooms, instead of a query per room.
func (s *Service) sinceByRange(ctx context.Context, roomIDs []string, forUser string, since, upTo int64) (map[string][]Receipt, error) {
	wanted := make(map[string]bool, len(roomIDs))
	for _, id := range roomIDs {
		wanted[id] = true
	}
	rows, err := s.db.Query(ctx, `SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 AND (receipt_type <> 'm.read.private' OR user_id = $3)`, since, upTo, forUser)
	if err != nil {
		return nil, fmt.Errorf("receipts since %d: %w", since, err)
	}
	defer rows.Close()
	out := map[string][]Receipt{}
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		if wanted[r.RoomID] {
			out[r.RoomID] = append(out[r.RoomID], r)
		}
	}
	return out, rows.Err()
}

// Event renders a room's receipts as the m.receipt ephemeral event.
func Event(rs []Receipt) map[string]any {
	content := map[string]map[string]map[string]map[string]any{}
	for _, r := range rs {
		byType := content[r.EventID]
		if byType == nil {
			byType = map[string]map[string]map[string]any{}
			content[r.EventID] = byType
		}
		byUser := byType[r.Type]
		if byUser == nil {
			byUser = map[string]map[string]any{}
			byType[r.Type] = byUser
		}
		entry := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			entry["thread_id"] = r.ThreadID
		}
		byUser[r.UserID] = entry
	}
	return map[string]any{"type": "m.receipt", "content": content}
}

// ReadMarker is one of a user's read receipts (m.read or m.read.private) in a
// room: ThreadID "" is unthreaded, "main" the main timeline, else a thread root.
type ReadMarker struct {
	RoomID, ThreadID, EventID string
}

// ReadMarkers returns the user's read receipts of both types in the rooms. Unread
// counts start after the later of them, per thread.
func (s *Service) ReadMarkers(ctx context.Context, userID string, roomIDs []string) ([]ReadMarker, error) {
	var out []ReadMarker
	for start := 0; start < len(roomIDs); start += 500 {
		batch := roomIDs[start:min(start+500, len(roomIDs))]
		marks, args := storage.InList(batch)
		args = append(args, userID)
		rows, err := s.db.Query(ctx, fmt.Sprintf(`SELECT room_id, thread_id, event_id FROM receipts
			WHERE user_id = $%d AND receipt_type IN ('m.read', 'm.read.private') AND room_id IN (%s)`, len(args), marks), args...)
		if err != nil {
			return nil, fmt.Errorf("read markers of %s: %w", userID, err)
		}
		for rows.Next() {
			var m ReadMarker
			if err := rows.Scan(&m.RoomID, &m.ThreadID, &m.EventID); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read markers of %s: %w", userID, err)
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read markers of %s: %w", userID, err)
		}
	}
	return out, nil
}
