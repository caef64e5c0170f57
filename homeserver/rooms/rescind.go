package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// RescindsInvite reports whether ev, from server origin, withdraws an invite this
// server holds without being in the room: a leave of a local user whose current
// membership here is an invite that one of origin's users sent. Such an event
// cannot be checked against the room's state (this server has none, only the
// invite), so it is taken on its signatures, like the invite was; an origin can
// only withdraw invites its own users made. (Synapse accepts these the same way,
// as out-of-band memberships.)
func (s *Service) RescindsInvite(ctx context.Context, origin string, ev gomatrixserverlib.PDU) (bool, error) {
	sk := ev.StateKey()
	if ev.Type() != spec.MRoomMember || sk == nil || !strings.HasSuffix(*sk, ":"+s.cfg.ServerName) {
		return false, nil
	}
	if m, err := ev.Membership(); err != nil || m != spec.Leave || !strings.HasSuffix(string(ev.SenderID()), ":"+origin) {
		return false, nil
	}
	roomID := ev.RoomID().String()
	var inviter string
	var membership sql.NullString
	err := s.db.QueryRow(ctx, `SELECT c.membership, e.sender FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomID, *sk).Scan(&membership, &inviter)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read membership of %s in %s: %w", *sk, roomID, err)
	}
	if membership.String != spec.Invite || !strings.HasSuffix(inviter, ":"+origin) {
		return false, nil
	}
	in, err := s.ServerInRoom(ctx, roomID, s.cfg.ServerName)
	return !in, err
}

// ReceiveRescind stores an invite's withdrawal that RescindsInvite accepted: the
// invitee's membership becomes leave here and the invite's stripped state goes.
func (s *Service) ReceiveRescind(ctx context.Context, ev gomatrixserverlib.PDU) error {
	roomID, userID := ev.RoomID().String(), *ev.StateKey()
	return s.storeOutOfRoom(ctx, ev, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM remote_invite_state WHERE room_id = $1 AND user_id = $2`, roomID, userID)
		return err
	})
}
