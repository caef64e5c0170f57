package rooms

import (
	"context"
	"fmt"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// Events by room sequence number (room_seq): the native protocol's view of a room.
// Seqs are 1, 2, 3, … per room in commit order, so "after seq N" is a primary-key
// range and a client that knows its last seq resumes exactly where it stopped.

// maxSeqBatch bounds one read by seq.
const maxSeqBatch = 500

// FeedAfter returns the room's events with seq > afterSeq, oldest first, up to
// limit, without a visibility check. It exists for one caller, the native hub's
// shared per-room feed, which hands each session only the events after that
// session's user joined (native.session keeps the floor, its join seq): events a
// joined member always sees. Everything else, a resume from further back included,
// reads through EventsAfterSeq or EventsBeforeSeq, which filter for the reader.
func (s *Service) FeedAfter(ctx context.Context, roomID string, afterSeq int64, limit int) ([]ClientEvent, error) {
	limit = min(max(limit, 1), maxSeqBatch)
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 AND room_seq > $2
		ORDER BY room_seq LIMIT $3`, roomID, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	return clientEvents(rows), nil
}

// JoinSeqs returns, for each room the user is joined to now, the seq of the join
// event: from there on the user sees every event as a member.
func (s *Service) JoinSeqs(ctx context.Context, userID string) (map[string]int64, error) {
	rows, err := s.db.Query(ctx, `SELECT c.room_id, e.room_seq FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.type = 'm.room.member' AND c.state_key = $1 AND c.membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("join seqs of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, fmt.Errorf("join seqs of %s: %w", userID, err)
		}
		out[id] = seq
	}
	return out, rows.Err()
}

// EventsAfterSeq returns the events with seq > afterSeq that userID may see, oldest
// first, up to limit, and the seq reached (to continue from, even when the events
// read were all hidden).
func (s *Service) EventsAfterSeq(ctx context.Context, roomID, userID string, afterSeq int64, limit int) ([]ClientEvent, int64, error) {
	return s.eventsBySeq(ctx, roomID, userID, afterSeq, limit, false)
}

// EventsBeforeSeq returns up to limit events with seq < beforeSeq (0: the latest)
// that userID may see, newest first, and the lowest seq read.
func (s *Service) EventsBeforeSeq(ctx context.Context, roomID, userID string, beforeSeq int64, limit int) ([]ClientEvent, int64, error) {
	if err := s.checkCanPage(ctx, roomID, userID); err != nil {
		return nil, 0, err
	}
	return s.eventsBySeq(ctx, roomID, userID, beforeSeq, limit, true)
}

func (s *Service) eventsBySeq(ctx context.Context, roomID, userID string, from int64, limit int, backward bool) ([]ClientEvent, int64, error) {
	limit = min(max(limit, 1), maxSeqBatch)
	v, err := s.newVisibility(ctx, roomID, User(userID))
	if err != nil {
		return nil, 0, err
	}
	q := `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND room_seq > $2 ORDER BY room_seq LIMIT $3`
	if backward {
		if from <= 0 {
			from = 1 << 62
		}
		q = `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND room_seq < $2 AND room_seq > 0 ORDER BY room_seq DESC LIMIT $3`
	}
	rows, err := s.queryEvents(ctx, q, roomID, from, limit)
	if err != nil {
		return nil, 0, err
	}
	reached := from
	var out []ClientEvent
	if err := v.loadErased(ctx, rows); err != nil {
		return nil, 0, err
	}
	for _, r := range rows {
		reached = r.seq
		r, ok, err := v.show(ctx, r)
		if err != nil {
			return nil, 0, err
		}
		if ok {
			out = append(out, r.clientEvent())
		}
	}
	if len(rows) == 0 && backward {
		reached = 0
	}
	return out, reached, nil
}

// LatestSeqs returns each room's latest seq.
func (s *Service) LatestSeqs(ctx context.Context, roomIDs []string) (map[string]int64, error) {
	out := make(map[string]int64, len(roomIDs))
	if len(roomIDs) == 0 {
		return out, nil
	}
	marks, args := storage.InList(roomIDs)
	rows, err := s.db.Query(ctx, `SELECT room_id, seq FROM rooms WHERE room_id IN (`+marks+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("latest seqs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, err
		}
		out[id] = seq
	}
	return out, rows.Err()
}
