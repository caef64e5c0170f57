package rooms

import (
	"context"
	"fmt"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// IndexEvent is one event of the events stream as the message search indexer
// reads it: enough to index its text or, for a redaction, to drop its target.
type IndexEvent struct {
	Pos      int64
	EventID  string
	RoomID   string
	Sender   string
	Type     string
	OriginTS int64
	// JSON is the event as stored (already redacted if it was).
	JSON string
	// Hidden is true for an event clients never see (rejected or soft-failed):
	// the indexer skips it, so search cannot leak it.
	Hidden bool
}

// IndexEventsSince returns up to limit events of the events stream after position
// after, in stream order, with their JSON: the search index's feed. Like
// EventsSince it never skips an event committed later than the last one returned.
func (s *Service) IndexEventsSince(ctx context.Context, after int64, limit int) ([]IndexEvent, error) {
	return s.indexEvents(ctx, `stream_pos > $1 ORDER BY stream_pos`, after, limit)
}

// IndexBackfillBefore returns up to limit timeline events backfilled from other
// servers (negative positions, not outliers) below position before, newest
// first. Backfill takes ever lower positions, so a cursor that moves down to
// the last position returned meets every later backfill.
func (s *Service) IndexBackfillBefore(ctx context.Context, before int64, limit int) ([]IndexEvent, error) {
	return s.indexEvents(ctx, `stream_pos < $1 AND stream_pos < 0 AND NOT outlier ORDER BY stream_pos DESC`, before, limit)
}

func (s *Service) indexEvents(ctx context.Context, where string, pos int64, limit int) ([]IndexEvent, error) {
	rows, err := s.db.Query(ctx, `SELECT stream_pos, event_id, room_id, sender, type, origin_ts, json, rejected OR soft_failed FROM events
		WHERE `+where+` LIMIT $2`, pos, limit)
	if err != nil {
		return nil, fmt.Errorf("index events from %d: %w", pos, err)
	}
	defer rows.Close()
	var out []IndexEvent
	for rows.Next() {
		var e IndexEvent
		if err := rows.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Sender, &e.Type, &e.OriginTS, &e.JSON, &e.Hidden); err != nil {
			return nil, fmt.Errorf("index events from %d: %w", pos, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("index events from %d: %w", pos, err)
	}
	return out, nil
}

// VisibleEvents returns the events among ids the user may see, through the one
// visibility filter, keyed by event ID. Rejected and soft-failed events and
// unknown IDs are left out; hidden is indistinguishable from missing.
func (s *Service) VisibleEvents(ctx context.Context, userID string, ids []string) (map[string]ClientEvent, error) {
	out := make(map[string]ClientEvent, len(ids))
	for start := 0; start < len(ids); start += 500 {
		batch := ids[start:min(start+500, len(ids))]
		marks, args := storage.InList(batch)
		rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
			WHERE event_id IN (`+marks+`) AND NOT outlier AND NOT rejected AND NOT soft_failed ORDER BY stream_pos`, args...)
		if err != nil {
			return nil, err
		}
		if rows, err = s.filterMixedRows(ctx, User(userID), rows); err != nil {
			return nil, err
		}
		for _, r := range rows {
			out[r.eventID] = r.clientEvent()
		}
	}
	return out, nil
}
