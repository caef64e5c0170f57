package rooms

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Peek starts the device looking into a room without joining it (MSC2753, which
// Sytest's peeking tests follow): the room, by ID or local alias, must be here and
// world-readable, the one history visibility that lets anyone read it. Its events
// then come in the device's syncs under rooms.peek. It returns the room ID.
func (s *Service) Peek(ctx context.Context, userID, deviceID, roomIDOrAlias string) (string, error) {
	roomID := roomIDOrAlias
	if strings.HasPrefix(roomIDOrAlias, "#") {
		var err error
		if roomID, err = s.ResolveAlias(ctx, roomIDOrAlias); err != nil {
			if errors.Is(err, ErrNotFound) {
				return "", mxerror.New(mxerror.NotFound, "room alias %s not found", roomIDOrAlias)
			}
			return "", err
		}
	} else if !strings.HasPrefix(roomIDOrAlias, "!") {
		return "", mxerror.New(mxerror.InvalidParam, "%q is not a room ID or alias", roomIDOrAlias)
	}
	if ok, err := s.roomExists(ctx, roomID); err != nil {
		return "", err
	} else if !ok {
		return "", mxerror.New(mxerror.NotFound, "room %s not found", roomID)
	}
	if vis, err := s.currentHistoryVisibility(ctx, roomID); err != nil {
		return "", err
	} else if vis != "world_readable" {
		return "", mxerror.New(mxerror.Forbidden, "room %s is not world-readable", roomID)
	}
	// The peek takes a position of its own in the events stream: a sync from
	// before it sends the room afresh, every later one only what is new.
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var pos int64
		if err := tx.NextStreamPos(ctx, "events", &pos); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO peeks (user_id, device_id, room_id, stream_pos) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, device_id, room_id) DO NOTHING`, userID, deviceID, roomID, pos)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("peek into %s: %w", roomID, err)
	}
	return roomID, nil
}

// Unpeek stops the device peeking into the room; not peeking is no error.
func (s *Service) Unpeek(ctx context.Context, userID, deviceID, roomID string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM peeks WHERE user_id = $1 AND device_id = $2 AND room_id = $3`, userID, deviceID, roomID); err != nil {
		return fmt.Errorf("unpeek %s: %w", roomID, err)
	}
	return nil
}

// PeekRow is a room a device peeks into.
type PeekRow struct {
	RoomID string
	// StreamPos is the events position the peek took when it began.
	StreamPos int64
}

// Peeks lists the rooms the device peeks into that are still world-readable and
// that the user is not joined to (a joined room comes as joined); a peek into a
// room that stopped being world-readable ends here.
func (s *Service) Peeks(ctx context.Context, userID, deviceID string) ([]PeekRow, error) {
	rows, err := s.db.Query(ctx, `SELECT p.room_id, p.stream_pos FROM peeks p WHERE p.user_id = $1 AND p.device_id = $2
		AND NOT EXISTS (SELECT 1 FROM current_state c WHERE c.room_id = p.room_id AND c.type = 'm.room.member'
			AND c.state_key = p.user_id AND c.membership = 'join')`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("peeks of %s: %w", userID, err)
	}
	var all []PeekRow
	for rows.Next() {
		var p PeekRow
		if err := rows.Scan(&p.RoomID, &p.StreamPos); err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []PeekRow
	for _, p := range all {
		vis, err := s.currentHistoryVisibility(ctx, p.RoomID)
		if err != nil {
			return nil, err
		}
		if vis != "world_readable" {
			if err := s.Unpeek(ctx, userID, deviceID, p.RoomID); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, p)
	}
	return out, nil
}
