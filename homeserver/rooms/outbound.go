package rooms

import (
	"context"
	"database/sql"
	"fmt"
)

// OutboundEvent is what the federation sender needs to know about one event of
// the stream to decide where it goes: enough to route it and keep its cache of
// each room's servers current without parsing the event.
type OutboundEvent struct {
	// Pos is the event's position in the events stream.
	Pos     int64
	EventID string
	RoomID  string
	Sender  string
	Type    string
	// StateKey is the event's state key; HasStateKey is false for a message
	// event (whose StateKey is then "").
	StateKey    string
	HasStateKey bool
	// Membership is the membership an m.room.member event sets, "" otherwise.
	Membership string
	// StateReplaced is true when the event was built on state the engine
	// replaced wholesale (a join through another server, a resolved fork): the
	// room's members may all have changed, so anything cached about them is stale.
	StateReplaced bool
}

// EventsSince returns up to limit events of the events stream after position
// after, in stream order. Positions are taken under one row lock and committed in
// order, so a reader that moves its cursor to the last position returned never
// skips an event committed later. Outliers (negative positions) are never returned.
func (s *Service) EventsSince(ctx context.Context, after int64, limit int) ([]OutboundEvent, error) {
	rows, err := s.db.Query(ctx, `SELECT stream_pos, event_id, room_id, sender, type, state_key, membership, snapshot_before FROM events
		WHERE stream_pos > $1 ORDER BY stream_pos LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("events after %d: %w", after, err)
	}
	defer rows.Close()
	var out []OutboundEvent
	for rows.Next() {
		var e OutboundEvent
		var sk, m sql.NullString
		var before int64
		if err := rows.Scan(&e.Pos, &e.EventID, &e.RoomID, &e.Sender, &e.Type, &sk, &m, &before); err != nil {
			return nil, fmt.Errorf("events after %d: %w", after, err)
		}
		e.StateKey, e.HasStateKey = sk.String, sk.Valid
		e.Membership = m.String
		e.StateReplaced = before < 0
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("events after %d: %w", after, err)
	}
	return out, nil
}
