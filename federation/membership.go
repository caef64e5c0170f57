package federation

// Memberships made through other servers: invites both ways, leaves and knocks.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// InviteRemote sends an invite to the invitee's server (/v2/invite) and returns it
// countersigned, after checking that signature.
func (s *Service) InviteRemote(ctx context.Context, invite gomatrixserverlib.PDU, state []gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	_, server, ok := strings.Cut(*invite.StateKey(), ":")
	if !ok {
		return nil, mxerror.New(mxerror.InvalidParam, "invalid user ID %q", *invite.StateKey())
	}
	stripped := make([]gomatrixserverlib.InviteStrippedState, len(state))
	for i, ev := range state {
		stripped[i] = gomatrixserverlib.NewInviteStrippedState(ev)
	}
	req, err := fclient.NewInviteV2Request(invite, stripped)
	if err != nil {
		return nil, err
	}
	res, err := s.client.SendInviteV2(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), req)
	if err != nil {
		var httpErr interface{ Error() string }
		if errors.As(err, &httpErr) {
			return nil, mxerror.New(mxerror.Forbidden, "%s refused the invite: %v", server, err)
		}
		return nil, err
	}
	impl, err := gomatrixserverlib.GetRoomVersion(invite.Version())
	if err != nil {
		return nil, err
	}
	signed, err := impl.NewEventFromUntrustedJSON(res.Event)
	if err != nil {
		// Invalid JSON for the room version (floats, out-of-range integers):
		// the invitee's server answered with something that is not an event.
		return nil, mxerror.New(mxerror.BadJSON, "the invite %s signed is not a valid event: %v", server, err)
	}
	if signed.EventID() != invite.EventID() {
		return nil, fmt.Errorf("%s changed the invite it signed", server)
	}
	if err := s.verify(ctx, signed); err != nil {
		return nil, err
	}
	return signed, nil
}

// invite handles PUT /v2/invite: another server invites one of our users. We sign
// the invite and keep it, with the room's stripped state, for the user to see.
func (s *Service) invite(r *fedRequest) (any, error) {
	ctx := r.Context()
	var req fclient.InviteV2Request
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, mxerror.New(mxerror.BadJSON, "invalid invite: %v", err)
	}
	ev := req.Event()
	if ev == nil {
		return nil, mxerror.New(mxerror.BadJSON, "invalid invite event")
	}
	impl, err := gomatrixserverlib.GetRoomVersion(req.RoomVersion())
	if err != nil {
		return nil, &mxerror.Error{Code: mxerror.IncompatibleRoomVersion, Message: "unsupported room version",
			Extra: map[string]any{"room_version": string(req.RoomVersion())}}
	}
	// The checks every PDU passes (it is signed here before its signatures are
	// checked, and gomatrixserverlib panics on some that parse).
	if _, err := parsePDU(impl, r.Vars["roomId"], ev.JSON()); err != nil {
		return nil, mxerror.New(mxerror.BadJSON, "invalid invite event: %v", err)
	}
	m, _ := ev.Membership()
	switch {
	case ev.EventID() != r.Vars["eventId"]:
		return nil, mxerror.New(mxerror.BadJSON, "the event's ID or room does not match the path")
	case ev.Type() != spec.MRoomMember || m != spec.Invite || ev.StateKey() == nil:
		return nil, mxerror.New(mxerror.BadJSON, "not an invite")
	case !strings.HasSuffix(*ev.StateKey(), ":"+s.cfg.ServerName):
		return nil, mxerror.New(mxerror.Forbidden, "%s is not a user of this server", *ev.StateKey())
	case !strings.HasSuffix(string(ev.SenderID()), ":"+r.Origin):
		return nil, mxerror.New(mxerror.Forbidden, "%s cannot invite for %s", r.Origin, ev.SenderID())
	}
	// Signed first: the signature check wants the invitee's server's signature on
	// an invite as well as the sender's.
	signed := ev.Sign(s.cfg.ServerName, gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey)
	if err := s.verify(ctx, signed); err != nil {
		return nil, mxerror.New(mxerror.Forbidden, "%v", err)
	}
	if err := s.requireACL(ctx, ev.RoomID().String(), r.Origin); err != nil {
		return nil, err
	}
	var stripped []json.RawMessage
	for _, st := range req.InviteRoomState() {
		raw, err := json.Marshal(st)
		if err == nil {
			stripped = append(stripped, raw)
		}
	}
	if err := s.deps.Rooms.ReceiveInvite(ctx, signed, stripped); err != nil {
		return nil, err
	}
	return map[string]any{"event": json.RawMessage(signed.JSON())}, nil
}

// LeaveRemote leaves (or rejects an invite to) a room through a resident server:
// make_leave, sign, send_leave.
func (s *Service) LeaveRemote(ctx context.Context, roomID, userID string, servers []string) (gomatrixserverlib.PDU, error) {
	var errs []error
	for _, server := range servers {
		ev, err := s.leaveVia(ctx, roomID, userID, server)
		if err == nil {
			return ev, nil
		}
		errs = append(errs, fmt.Errorf("via %s: %w", server, err))
	}
	return nil, mxerror.New(mxerror.Unknown, "could not leave %s: %v", roomID, errors.Join(errs...))
}

func (s *Service) leaveVia(ctx context.Context, roomID, userID, server string) (gomatrixserverlib.PDU, error) {
	origin := spec.ServerName(s.cfg.ServerName)
	res, err := s.client.MakeLeave(ctx, origin, spec.ServerName(server), roomID, userID)
	if err != nil {
		return nil, err
	}
	impl, err := gomatrixserverlib.GetRoomVersion(res.RoomVersion)
	if err != nil {
		return nil, err
	}
	proto := res.LeaveEvent
	proto.Type, proto.RoomID, proto.SenderID, proto.StateKey = spec.MRoomMember, roomID, userID, &userID
	if err := proto.SetContent(map[string]string{"membership": spec.Leave}); err != nil {
		return nil, err
	}
	ev, err := impl.NewEventBuilderFromProtoEvent(&proto).Build(timeNow(), origin, gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey)
	if err != nil {
		return nil, err
	}
	if err := s.client.SendLeave(ctx, origin, spec.ServerName(server), ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// inviteV1 is the first invite endpoint: the bare event as the body, rooms of
// version 1 or 2 assumed, and the answer wrapped as [200, {"event": …}].
func (s *Service) inviteV1(r *fedRequest) (any, error) {
	body, err := json.Marshal(map[string]any{"room_version": "1", "event": json.RawMessage(r.Body), "invite_room_state": []any{}})
	if err != nil {
		return nil, err
	}
	if version, err := s.deps.Rooms.RoomVersion(r.Context(), r.Vars["roomId"]); err == nil {
		body, _ = json.Marshal(map[string]any{"room_version": string(version.Version()), "event": json.RawMessage(r.Body), "invite_room_state": []any{}})
	}
	r2 := *r
	r2.Body = body
	return v1(s.invite)(&r2)
}

// KnockRemote knocks through a resident server: make_knock, sign, send_knock.
func (s *Service) KnockRemote(ctx context.Context, roomID, userID, reason string, servers []string) (gomatrixserverlib.PDU, []json.RawMessage, error) {
	var errs []error
	origin := spec.ServerName(s.cfg.ServerName)
	versions := make([]gomatrixserverlib.RoomVersion, 0, 12)
	for v := range gomatrixserverlib.RoomVersions() {
		versions = append(versions, v)
	}
	for _, server := range servers {
		res, err := s.client.MakeKnock(ctx, origin, spec.ServerName(server), roomID, userID, versions)
		if err != nil {
			errs = append(errs, fmt.Errorf("via %s: %w", server, err))
			continue
		}
		impl, err := gomatrixserverlib.GetRoomVersion(res.RoomVersion)
		if err != nil {
			return nil, nil, &mxerror.Error{Code: mxerror.IncompatibleRoomVersion, Message: err.Error()}
		}
		proto := res.KnockEvent
		proto.Type, proto.RoomID, proto.SenderID, proto.StateKey = spec.MRoomMember, roomID, userID, &userID
		content := map[string]string{"membership": spec.Knock}
		if reason != "" {
			content["reason"] = reason
		}
		if err := proto.SetContent(content); err != nil {
			return nil, nil, err
		}
		ev, err := impl.NewEventBuilderFromProtoEvent(&proto).Build(timeNow(), origin, gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey)
		if err != nil {
			return nil, nil, err
		}
		sent, err := s.client.SendKnock(ctx, origin, spec.ServerName(server), ev)
		if err != nil {
			errs = append(errs, fmt.Errorf("via %s: %w", server, err))
			continue
		}
		stripped := make([]json.RawMessage, 0, len(sent.KnockRoomState))
		for _, st := range sent.KnockRoomState {
			if raw, err := json.Marshal(st); err == nil {
				stripped = append(stripped, raw)
			}
		}
		return ev, stripped, nil
	}
	return nil, nil, mxerror.New(mxerror.Forbidden, "could not knock on %s: %v", roomID, errors.Join(errs...))
}

// makeKnock answers GET /make_knock.
func (s *Service) makeKnock(r *fedRequest) (any, error) {
	return s.makeMembership(r, spec.Knock)
}

// sendKnock handles PUT /send_knock: the knock goes into the room, and the knocker
// gets the room's stripped state to show.
func (s *Service) sendKnock(r *fedRequest) (any, error) {
	ev, _, err := s.receiveMembership(r, spec.Knock)
	if err != nil {
		return nil, err
	}
	state, err := s.deps.Rooms.StrippedState(r.Context(), ev.RoomID().String(), string(ev.SenderID()))
	if err != nil {
		return nil, err
	}
	return map[string]any{"knock_room_state": state}, nil
}
