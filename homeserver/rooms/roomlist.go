package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
)

// bumpTypes are the events that move a room up a recency-sorted room list: what a
// person would call activity. Reactions, edits' relations, receipts and most state
// changes do not, so a busy room of bots does not crowd out conversations.
var bumpTypes = []any{"m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite", "m.poll.start", "m.beacon_info"}

// BumpStamps returns, for each room, the stream position of its latest event of a
// bump type at or before upTo: the sort key of sliding sync's recency lists. A room
// without such an event (none can be: every room has a create event) is absent.
func (s *Service) BumpStamps(ctx context.Context, roomIDs []string, upTo int64) (map[string]int64, error) {
	out := make(map[string]int64, len(roomIDs))
	query := `SELECT stream_pos FROM events WHERE room_id = $1 AND stream_pos <= $2 AND stream_pos > 0 AND type IN ($3, $4, $5, $6, $7, $8, $9)
		ORDER BY stream_pos DESC LIMIT 1`
	for _, roomID := range roomIDs {
		var pos int64
		err := s.db.QueryRow(ctx, query, append([]any{roomID, upTo}, bumpTypes...)...).Scan(&pos)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bump stamp of %s: %w", roomID, err)
		}
		out[roomID] = pos
	}
	return out, nil
}

// Facts are what room lists filter and label rooms by, from the current state.
type Facts struct {
	// Type is the create event's type ("m.space"), empty for ordinary rooms.
	Type      string
	Encrypted bool
	Name      string
	AvatarURL string
}

// RoomFacts reads the facts of each room from its current state.
func (s *Service) RoomFacts(ctx context.Context, roomIDs []string) (map[string]Facts, error) {
	out := make(map[string]Facts, len(roomIDs))
	for _, roomID := range roomIDs {
		rows, err := s.db.Query(ctx, `SELECT e.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = $1 AND c.state_key = '' AND c.type IN ('m.room.create', 'm.room.encryption', 'm.room.name', 'm.room.avatar')`, roomID)
		if err != nil {
			return nil, fmt.Errorf("facts of %s: %w", roomID, err)
		}
		var f Facts
		for rows.Next() {
			var typ, js string
			if err := rows.Scan(&typ, &js); err != nil {
				rows.Close()
				return nil, err
			}
			content := gjson.Get(js, "content")
			switch typ {
			case "m.room.create":
				f.Type = content.Get("type").String()
			case "m.room.encryption":
				f.Encrypted = content.Get("algorithm").String() != ""
			case "m.room.name":
				f.Name = content.Get("name").String()
			case "m.room.avatar":
				f.AvatarURL = content.Get("url").String()
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		out[roomID] = f
	}
	return out, nil
}

// RoomChange is what happened to a room between two positions of the events
// stream.
type RoomChange struct {
	// Events: the room has events in the range.
	Events bool
	// StateCompleted: the room's partial state was completed in the range, so a
	// client should be sent its whole state again.
	StateCompleted bool
}

// RoomsChangedBetween returns the rooms with an event, or a completed state, after
// since, up to upTo. An incremental sync asks this once instead of asking each of
// the user's rooms.
func (s *Service) RoomsChangedBetween(ctx context.Context, since, upTo int64) (map[string]RoomChange, error) {
	out := map[string]RoomChange{}
	if since >= upTo {
		return out, nil
	}
	rows, err := s.db.Query(ctx, `SELECT DISTINCT room_id, FALSE FROM events WHERE stream_pos > $1 AND stream_pos <= $2
		UNION ALL SELECT room_id, TRUE FROM rooms WHERE state_completed_pos > $1 AND state_completed_pos <= $2`, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("rooms changed after %d: %w", since, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var completed bool
		if err := rows.Scan(&id, &completed); err != nil {
			return nil, err
		}
		c := out[id]
		if completed {
			c.StateCompleted = true
		} else {
			c.Events = true
		}
		out[id] = c
	}
	return out, rows.Err()
}

// MemberChange is a membership event: who, where, and what they became.
type MemberChange struct {
	RoomID, UserID, Membership string
}

// MemberChangesBetween returns the membership events after since, up to upTo, in
// rooms userID is or was a member of. Sync derives from them whose devices a client
// must start or stop tracking.
func (s *Service) MemberChangesBetween(ctx context.Context, userID string, since, upTo int64) ([]MemberChange, error) {
	if since >= upTo {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT e.room_id, e.state_key, e.membership FROM events e
		WHERE e.type = 'm.room.member' AND e.stream_pos > $1 AND e.stream_pos <= $2
		AND EXISTS (SELECT 1 FROM current_state c WHERE c.room_id = e.room_id AND c.type = 'm.room.member' AND c.state_key = $3)`,
		since, upTo, userID)
	if err != nil {
		return nil, fmt.Errorf("membership changes after %d: %w", since, err)
	}
	defer rows.Close()
	var out []MemberChange
	for rows.Next() {
		var c MemberChange
		var m sql.NullString
		if err := rows.Scan(&c.RoomID, &c.UserID, &m); err != nil {
			return nil, err
		}
		c.Membership = m.String
		out = append(out, c)
	}
	return out, rows.Err()
}

// JoinedUserIDs lists the room's joined members, without any permission check: for
// the core's own bookkeeping, never for answering a client directly.
func (s *Service) JoinedUserIDs(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
