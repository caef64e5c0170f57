package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Guest access (the spec's "Guest access" module): guest accounts are a local
// notion, so these rules sit beside the auth rules instead of inside them, as in
// Synapse. A guest joins only a room whose m.room.guest_access is can_join, and
// when a room stops allowing guests its local guests are made to leave.

const guestAccessType = "m.room.guest_access"

// isGuest reports whether userID is a local guest account.
func (s *Service) isGuest(ctx context.Context, userID string) (bool, error) {
	if s.cfg.Guests == nil || !s.isLocal(userID) {
		return false, nil
	}
	g, err := s.cfg.Guests.IsGuest(ctx, userID)
	if err != nil {
		return false, fmt.Errorf("is %s a guest: %w", userID, err)
	}
	return g, nil
}

// guestsCanJoin reports whether the room's current m.room.guest_access is can_join.
func (s *Service) guestsCanJoin(ctx context.Context, roomID string) (bool, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = $2 AND c.state_key = ''`, roomID, guestAccessType).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read guest access of %s: %w", roomID, err)
	}
	return gjson.Get(raw, "content.guest_access").String() == "can_join", nil
}

// checkGuestJoin refuses a guest's join unless the room lets guests join.
func (s *Service) checkGuestJoin(ctx context.Context, roomID, userID string) error {
	guest, err := s.isGuest(ctx, userID)
	if err != nil || !guest {
		return err
	}
	ok, err := s.guestsCanJoin(ctx, roomID)
	if err != nil {
		return err
	}
	if !ok {
		return mxerror.New(mxerror.Forbidden, "guests may not join room %s", roomID)
	}
	return nil
}

// guestAccessChanged runs after a committed event: when it is the room's
// m.room.guest_access and guests may no longer join, every local guest still joined
// leaves (a leave sent as the guest, which the auth rules always allow). Callers
// must not hold the room's lock. Failures are logged: the change itself is
// committed, and a guest left behind can still be removed by a moderator.
func (s *Service) guestAccessChanged(ctx context.Context, roomID, typ string, stateKey *string) {
	if s.cfg.Guests == nil || typ != guestAccessType || stateKey == nil || *stateKey != "" {
		return
	}
	if err := s.removeGuests(ctx, roomID); err != nil {
		slog.Warn("remove guests after guest access revoked", "room_id", roomID, "err", err)
	}
}

func (s *Service) removeGuests(ctx context.Context, roomID string) error {
	if ok, err := s.guestsCanJoin(ctx, roomID); err != nil || ok {
		return err
	}
	rows, err := s.db.Query(ctx, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'
		AND state_key LIKE $2 ESCAPE '\'`, roomID, serverSuffixPattern(s.cfg.ServerName))
	if err != nil {
		return fmt.Errorf("read local members: %w", err)
	}
	members, err := scanNullStrings(rows)
	if err != nil {
		return fmt.Errorf("read local members: %w", err)
	}
	for _, userID := range members {
		guest, err := s.isGuest(ctx, userID)
		if err != nil {
			return err
		}
		if !guest {
			continue
		}
		target := userID
		content := mustJSON(map[string]string{"membership": "leave"})
		if _, err := s.write(ctx, roomID, nil, []Proto{{Sender: userID, Type: spec.MRoomMember, StateKey: &target, Content: content}}); err != nil {
			return fmt.Errorf("guest %s leaves: %w", userID, err)
		}
	}
	return nil
}
