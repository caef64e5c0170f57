package rooms

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestReceive feeds hand-built events of another server into a local room through
// the federation input path (whose caller has checked signatures): events that
// extend the room, arrive out of order, lack prev or auth events, fail the auth
// rules, or pass them only at the state before them (soft failure).
func TestReceive(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		remoteKey, err := serverkey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		alice, rob, eve := uid("alice"), "@rob:remote.test", "@eve:remote.test"
		roomID, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		impl, err := s.RoomVersion(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		stateID := func(typ, key string) string {
			t.Helper()
			ev, err := s.StateEvent(ctx, roomID, alice, typ, key)
			if err != nil {
				t.Fatalf("StateEvent(%s, %q): %v", typ, key, err)
			}
			return ev.EventID
		}
		head := func() []string {
			t.Helper()
			ids, err := s.ForwardExtremities(ctx, roomID)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(ids)
			return ids
		}
		build := func(version gomatrixserverlib.IRoomVersion, sender, typ string, stateKey *string, content any, prev, auth []string) gomatrixserverlib.PDU {
			t.Helper()
			depth := int64(1)
			for _, id := range prev {
				if p, err := s.PDU(ctx, id); err == nil {
					depth = max(depth, p.Depth()+1)
				} else {
					depth = max(depth, 100)
				}
			}
			proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
				Content: spec.RawJSON(mustJSON(content)), PrevEvents: prev, AuthEvents: auth, Depth: depth}
			ev, err := version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "remote.test",
				gomatrixserverlib.KeyID(remoteKey.ID), remoteKey.PrivateKey)
			if err != nil {
				t.Fatalf("build %s: %v", typ, err)
			}
			return ev
		}
		msg := func(sender string, prev, auth []string) gomatrixserverlib.PDU {
			return build(impl, sender, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "hi"}, prev, auth)
		}
		latest := func() int64 {
			p, err := s.LatestPosition(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		// visible reports whether the event is in the room's timeline as a member
		// pages it. (GET /event by ID is not checked here: see the note below.)
		// visible reports whether a member sees the event in the timeline or by ID.
		visible := func(id string) bool {
			t.Helper()
			page, err := s.Messages(ctx, roomID, alice, MessagesQuery{From: Token(latest()), Backward: true, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(page.Chunk, func(ev ClientEvent) bool { return ev.EventID == id }) {
				return true
			}
			_, err = s.Event(ctx, roomID, alice, id)
			return err == nil
		}
		create, pl, joinRules := stateID("m.room.create", ""), stateID("m.room.power_levels", ""), stateID("m.room.join_rules", "")

		// A remote user joins the public room on our head.
		join := build(impl, rob, "m.room.member", strptr(rob), map[string]string{"membership": "join"}, head(), []string{create, pl, joinRules})
		if err := s.Receive(ctx, join); err != nil {
			t.Fatalf("Receive(join) = %v; want accepted", err)
		}
		if m, err := s.CurrentMembership(ctx, roomID, rob); err != nil || m != "join" {
			t.Fatalf("membership of %s after join = %q, %v; want join", rob, m, err)
		}
		robAuth := []string{create, pl, join.EventID()}

		// Out of order: b, built on a, arrives first and names a as missing; once a
		// is in, b follows and becomes the head.
		a := msg(rob, head(), robAuth)
		b := msg(rob, []string{a.EventID()}, robAuth)
		var missing *MissingEventsError
		if err := s.Receive(ctx, b); !errors.As(err, &missing) || !slices.Equal(missing.Prev, []string{a.EventID()}) || len(missing.Auth) != 0 {
			t.Fatalf("Receive(b before a) = %v; want missing prev [%s]", err, a.EventID())
		}
		if visible(b.EventID()) {
			t.Errorf("b is visible after it was refused for a missing prev event")
		}
		for _, ev := range []gomatrixserverlib.PDU{a, b} {
			if err := s.Receive(ctx, ev); err != nil {
				t.Fatalf("Receive(%s) = %v; want accepted", ev.EventID(), err)
			}
		}
		if got := head(); !slices.Equal(got, []string{b.EventID()}) {
			t.Errorf("head after a, b = %v; want [%s]", got, b.EventID())
		}
		if !visible(a.EventID()) || !visible(b.EventID()) {
			t.Errorf("accepted events in the timeline: a %v, b %v; want both", visible(a.EventID()), visible(b.EventID()))
		}

		// Receiving an event again changes nothing.
		before := latest()
		if err := s.Receive(ctx, b); err != nil || latest() != before {
			t.Errorf("Receive(b again) = %v, stream %d -> %d; want nil and no move", err, before, latest())
		}

		unknown := "$" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
		if err := s.Receive(ctx, msg(rob, head(), append(slices.Clone(robAuth), unknown))); !errors.As(err, &missing) || !slices.Equal(missing.Auth, []string{unknown}) {
			t.Errorf("Receive(unknown auth event) = %v; want missing auth [%s]", err, unknown)
		}

		for _, tc := range []struct {
			name string
			ev   gomatrixserverlib.PDU
		}{
			{"sender not in the room", msg(eve, head(), []string{create, pl})},
			{"sender not in the room, citing another's join", msg(eve, head(), robAuth)},
			{"power levels above the sender's power", build(impl, rob, "m.room.power_levels", strptr(""),
				map[string]any{"users": map[string]int{rob: 100}}, head(), robAuth)},
			{"event of another room version", build(mustVersion(t, "11"), rob, "m.room.message", nil, map[string]string{"body": "v11"}, head(), robAuth)},
		} {
			before := latest()
			err := s.Receive(ctx, tc.ev)
			if !errors.Is(err, ErrRejected) {
				t.Errorf("%s: Receive = %v; want ErrRejected", tc.name, err)
			}
			if visible(tc.ev.EventID()) || latest() != before {
				t.Errorf("%s: rejected event visible %v, stream %d -> %d; want hidden and no move", tc.name, visible(tc.ev.EventID()), before, latest())
			}
		}
		if m, _ := s.CurrentMembership(ctx, roomID, rob); m != "join" {
			t.Errorf("membership of %s after rejected events = %q; want join", rob, m)
		}

		// Soft failure: built before alice banned rob, allowed at the state before
		// it but not at the room's current state. It is kept, never shown, and the
		// room's head and state stay where the ban left them.
		beforeBan := head()
		ban, err := s.SetMembership(ctx, roomID, Membership{Sender: alice, Target: rob, Membership: "ban"})
		if err != nil {
			t.Fatal(err)
		}
		late := msg(rob, beforeBan, robAuth)
		if err := s.Receive(ctx, late); err != nil {
			t.Fatalf("Receive(soft-failed) = %v; want nil", err)
		}
		// Neither in the timeline nor by ID (GET /rooms/{id}/event/{eventId}).
		if visible(late.EventID()) {
			t.Errorf("soft-failed event is visible to a member")
		}
		if got := head(); !slices.Equal(got, []string{ban.EventID}) {
			t.Errorf("head after a soft-failed event = %v; want the ban [%s]", got, ban.EventID)
		}
		// On the head, after the ban, the same kind of event fails outright.
		if err := s.Receive(ctx, msg(rob, head(), robAuth)); !errors.Is(err, ErrRejected) {
			t.Errorf("Receive(banned sender on the head) = %v; want ErrRejected", err)
		}
		if m, _ := s.CurrentMembership(ctx, roomID, rob); m != "ban" {
			t.Errorf("membership of %s = %q; want ban", rob, m)
		}
	})
}

func mustVersion(t *testing.T, v string) gomatrixserverlib.IRoomVersion {
	t.Helper()
	impl, err := versionImpl(v)
	if err != nil {
		t.Fatal(err)
	}
	return impl
}
