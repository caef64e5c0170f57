package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestPartialStateRecheckedSecurity: a banned user's server exploits B's partial
// state. Mallory (on C) joined alice's room on A and was banned. Bob on B joins with
// partial state (member events left out) while A and C hold back /state, so B cannot
// see the ban. C then sends B, as mallory, a rejoin whose auth events name her old
// join, and a message on it — both allowed by their own auth events, which is all
// B can check while partial — and B's engine admits a third event, a message built
// on her old join with the state at that join as origin would give it (the state
// route of a gap, ReceiveWithState). After A's /state is released and B has the
// whole state: the rejoin and message are rejected (the state before them has the
// ban), the forked message soft-failed (allowed where it was built, not by the
// room's state when it came); none stays in bob's timeline, B's current state
// equals A's (mallory banned, not rejoined), and what alice, carol and bob did
// during the partial period stays.
func TestPartialStateRecheckedSecurity(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		ctx := context.Background()
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		c := testserver.Start(t, d, testserver.Federated)
		alice, bob := a.Register(t, "alice", "pw"), b.Register(t, "bob", "pw")
		carol, mallory := c.Register(t, "carol", "pw"), c.Register(t, "mallory", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		room := created["room_id"]
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
		a.Register(t, "m1", "pw").MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		mallory.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		waitFor(t, "A to see carol and mallory", func() bool {
			st := roomState(t, alice, room)
			return st[[2]string{"m.room.member", carol.UserID}] != "" && st[[2]string{"m.room.member", mallory.UserID}] != ""
		})
		waitFor(t, "C to have the room's whole state", func() bool {
			partial, err := c.Rooms.StatePartial(ctx, room)
			return err == nil && !partial
		})
		st := roomState(t, alice, room)
		malloryJoin := st[[2]string{"m.room.member", mallory.UserID}]
		createID, plID, rulesID := st[[2]string{"m.room.create", ""}], st[[2]string{"m.room.power_levels", ""}], st[[2]string{"m.room.join_rules", ""}]
		alice.MustDo("POST", path+"/ban", map[string]any{"user_id": mallory.UserID, "reason": "spam"}, nil)

		// B joins with partial state; nobody answers its /state until released.
		releaseA := a.HoldFederation(t, "/state/")
		releaseC := c.HoldFederation(t, "/state/")
		since := syncToken(t, bob, "")
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		if partial, err := b.Rooms.StatePartial(ctx, room); err != nil || !partial {
			t.Fatalf("B's state of the room partial = %v, %v; want partial", partial, err)
		}

		// What is legitimately said and set while B's state is partial.
		var topic map[string]string
		alice.MustDo("PUT", path+"/state/m.room.topic", map[string]string{"topic": "set while B was partial"}, &topic)
		waitFor(t, "B to hold alice's topic", func() bool { ev, _ := b.Rooms.PDU(ctx, topic["event_id"]); return ev != nil })
		carolSaid := send(t, carol, room, "c1", "carol, legitimately")
		waitFor(t, "bob to hear carol", func() bool { return slices.Contains(bodies(t, bob, room), "carol, legitimately") })
		bobSaid := send(t, bob, room, "b1", "bob, legitimately")

		// The attack: events of a banned user that B's partial state lets in.
		version, err := b.Rooms.RoomVersion(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		head, err := b.Rooms.ForwardExtremities(ctx, room)
		if err != nil || len(head) != 1 {
			t.Fatalf("B's forward extremities = %v, %v; want one", head, err)
		}
		headEv, err := b.Rooms.PDU(ctx, head[0])
		if err != nil {
			t.Fatal(err)
		}
		asMallory := func(typ string, stateKey *string, content string, prev, auth []string, depth int64) gomatrixserverlib.PDU {
			t.Helper()
			proto := gomatrixserverlib.ProtoEvent{SenderID: mallory.UserID, RoomID: room, Type: typ, StateKey: stateKey,
				Content: spec.RawJSON(content), PrevEvents: prev, AuthEvents: auth, Depth: depth}
			ev, err := version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(c.Config.ServerName),
				gomatrixserverlib.KeyID(c.Key.ID), c.Key.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		rejoin := asMallory("m.room.member", &mallory.UserID, `{"membership":"join","displayname":"back again"}`,
			head, []string{createID, plID, rulesID, malloryJoin}, headEv.Depth()+1)
		msg := asMallory("m.room.message", nil, `{"msgtype":"m.text","body":"mallory, banned, talking"}`,
			[]string{rejoin.EventID()}, []string{createID, plID, rejoin.EventID()}, headEv.Depth()+2)
		client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(c.Config.ServerName),
			KeyID: gomatrixserverlib.KeyID(c.Key.ID), PrivateKey: c.Key.PrivateKey}}, fclient.WithSkipVerify(true))
		res, err := client.SendTransaction(ctx, gomatrixserverlib.Transaction{TransactionID: "partial-state-attack",
			Origin: spec.ServerName(c.Config.ServerName), Destination: spec.ServerName(b.Config.ServerName),
			OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{rejoin.JSON(), msg.JSON()}})
		if err != nil {
			t.Fatalf("send transaction to B: %v", err)
		}
		for id, r := range res.PDUs {
			if r.Error != "" {
				t.Fatalf("B refused %s while partial: %s (the attack must land for this test to mean anything)", id, r.Error)
			}
		}
		joinEv, err := a.Rooms.PDU(ctx, malloryJoin)
		if err != nil {
			t.Fatal(err)
		}
		forked := asMallory("m.room.message", nil, `{"msgtype":"m.text","body":"mallory, from before her ban"}`,
			[]string{malloryJoin}, []string{createID, plID, malloryJoin}, joinEv.Depth()+1)
		given, err := a.Rooms.StateBefore(ctx, room, malloryJoin)
		if err != nil {
			t.Fatal(err)
		}
		given = append(slices.DeleteFunc(given, func(ev gomatrixserverlib.PDU) bool {
			return ev.Type() == "m.room.member" && ev.StateKeyEquals(mallory.UserID)
		}), joinEv)
		if err := b.Rooms.ReceiveWithState(ctx, forked, given); err != nil {
			t.Fatalf("B's engine refused the forked event while partial: %v", err)
		}
		// The hole, while partial: the banned user's events are in bob's
		// timeline and her rejoin in B's current state.
		if got := bodies(t, bob, room); !slices.Contains(got, "mallory, banned, talking") || !slices.Contains(got, "mallory, from before her ban") {
			t.Fatalf("bob's timeline while partial = %q; want mallory's messages in it (the attack did not land)", got)
		}

		releaseA()
		releaseC()
		waitFor(t, "B to complete the room's state", func() bool {
			partial, err := b.Rooms.StatePartial(ctx, room)
			return err == nil && !partial
		})

		for _, tc := range []struct {
			name, id                      string
			outlier, rejected, softFailed bool
		}{
			{"mallory's rejoin", rejoin.EventID(), true, true, false},
			{"mallory's message on it", msg.EventID(), true, true, false},
			{"mallory's forked message", forked.EventID(), true, false, true},
			{"alice's topic", topic["event_id"], false, false, false},
			{"carol's message", carolSaid, false, false, false},
			{"bob's message", bobSaid, false, false, false},
		} {
			var outlier, rejected, softFailed bool
			var pos int64
			if err := b.DB.QueryRow(ctx, `SELECT outlier, rejected, soft_failed, stream_pos FROM events WHERE event_id = $1`, tc.id).
				Scan(&outlier, &rejected, &softFailed, &pos); err != nil {
				t.Errorf("%s on B: %v", tc.name, err)
				continue
			}
			if outlier != tc.outlier || rejected != tc.rejected || softFailed != tc.softFailed || (pos < 0) != tc.outlier {
				t.Errorf("%s on B: outlier %v, rejected %v, soft-failed %v, stream_pos %d; want %v, %v, %v", tc.name,
					outlier, rejected, softFailed, pos, tc.outlier, tc.rejected, tc.softFailed)
			}
		}
		got := bodies(t, bob, room)
		for _, body := range []string{"carol, legitimately", "bob, legitimately"} {
			if !slices.Contains(got, body) {
				t.Errorf("bob's timeline after completion = %q; lacks %q", got, body)
			}
		}
		for _, body := range []string{"mallory, banned, talking", "mallory, from before her ban"} {
			if slices.Contains(got, body) {
				t.Errorf("bob's timeline after completion = %q; still has %q", got, body)
			}
		}

		// B's current state is A's: mallory banned, alice's topic, everyone else.
		waitFor(t, "A to see bob", func() bool { return roomState(t, alice, room)[[2]string{"m.room.member", bob.UserID}] != "" })
		onA, onB := roomState(t, alice, room), roomState(t, bob, room)
		if !maps.Equal(onA, onB) {
			t.Errorf("B's current state after completion differs from A's:\n B %v\n A %v", onB, onA)
		}
		var member map[string]any
		bob.MustDo("GET", path+"/state/m.room.member/"+url.PathEscape(mallory.UserID), nil, &member)
		if member["membership"] != "ban" {
			t.Errorf("mallory's membership on B = %v; want ban", member)
		}
		// A client that saw the partial room syncs across the completion and
		// gets the whole state again, with the ban, and none of the refused
		// events. (Its timeline may also hold history from before bob's join,
		// backfilled by /messages above: mallory's original join among it.)
		m, timeline := syncedRoom(t, bob, since, room, mallory.UserID)
		if m != "ban" {
			t.Errorf("mallory's membership in the state of bob's sync across the completion = %q; want ban", m)
		}
		for _, id := range []string{rejoin.EventID(), msg.EventID(), forked.EventID()} {
			if slices.Contains(timeline, id) {
				t.Errorf("bob's sync across the completion has refused event %s in its timeline", id)
			}
		}
	})
}

// roomState is the room's current state as a client reads it: (type, state_key)
// to event ID.
func roomState(t *testing.T, c *testserver.Client, roomID string) map[[2]string]string {
	t.Helper()
	var evs []event
	c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil, &evs)
	out := make(map[[2]string]string, len(evs))
	for _, ev := range evs {
		out[[2]string{ev.Type, ev.StateKey}] = ev.EventID
	}
	return out
}

// syncedRoom syncs from since and returns userID's membership in the room's
// state section and the IDs of the room's timeline events.
func syncedRoom(t *testing.T, c *testserver.Client, since, room, userID string) (string, []string) {
	t.Helper()
	var resp struct {
		Rooms struct {
			Join map[string]struct {
				State    struct{ Events []event } `json:"state"`
				Timeline struct{ Events []event } `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	c.MustDo("GET", "/_matrix/client/v3/sync?timeout=10000&since="+url.QueryEscape(since), nil, &resp)
	jr := resp.Rooms.Join[room]
	membership := ""
	for _, ev := range jr.State.Events {
		if ev.Type == "m.room.member" && ev.StateKey == userID {
			membership = fmt.Sprint(ev.Content["membership"])
		}
	}
	var timeline []string
	for _, ev := range jr.Timeline.Events {
		timeline = append(timeline, ev.EventID)
	}
	return membership, timeline
}

// TestPartialStateCompletionResolvesSecurity: the state send_join gave B names
// stale power levels — as a lying or lagging resident server would answer; the
// test writes them into B's partial state, since a real server answers honestly —
// and the whole state B fetches afterwards names the current ones. The completion
// resolves the two rather than keeping what it had (ON CONFLICT DO NOTHING did):
// B ends with A's power levels and A's state.
func TestPartialStateCompletionResolvesSecurity(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		ctx := context.Background()
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice, bob := a.Register(t, "alice", "pw"), b.Register(t, "bob", "pw")
		m1 := a.Register(t, "m1", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		room := created["room_id"]
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
		m1.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		stale := roomState(t, alice, room)[[2]string{"m.room.power_levels", ""}]
		var levels map[string]any
		alice.MustDo("GET", path+"/state/m.room.power_levels", nil, &levels)
		levels["users"] = map[string]any{alice.UserID: 100, m1.UserID: 50}
		var current map[string]string
		alice.MustDo("PUT", path+"/state/m.room.power_levels", levels, &current)

		release := a.HoldFederation(t, "/state/")
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		partial, err := b.Rooms.PartialStateRooms(ctx)
		if err != nil || len(partial) != 1 {
			t.Fatalf("partial-state rooms on B = %+v, %v; want this room", partial, err)
		}
		if ev, err := b.Rooms.PDU(ctx, stale); err != nil || ev == nil {
			t.Fatalf("B lacks the stale power levels %s (its auth chain should bring them): %v", stale, err)
		}
		// send_join's answer, as a lying resident server would have given it.
		var snap int64
		if err := b.DB.QueryRow(ctx, `SELECT snapshot_before FROM events WHERE event_id = $1`, partial[0].JoinEventID).Scan(&snap); err != nil {
			t.Fatal(err)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{`UPDATE state_snapshot_entries SET event_id = $1 WHERE snapshot_id = $2 AND type = 'm.room.power_levels'`, []any{stale, snap}},
			{`UPDATE current_state SET event_id = $1 WHERE room_id = $2 AND type = 'm.room.power_levels'`, []any{stale, room}},
		} {
			if _, err := b.DB.Exec(ctx, q.sql, q.args...); err != nil {
				t.Fatal(err)
			}
		}
		if got := roomState(t, bob, room)[[2]string{"m.room.power_levels", ""}]; got != stale {
			t.Fatalf("B's power levels while partial = %s; want the stale %s", got, stale)
		}

		release()
		waitFor(t, "B to complete the room's state", func() bool {
			partial, err := b.Rooms.StatePartial(ctx, room)
			return err == nil && !partial
		})
		onA, onB := roomState(t, alice, room), roomState(t, bob, room)
		if got := onB[[2]string{"m.room.power_levels", ""}]; got != current["event_id"] {
			t.Errorf("B's power levels after completion = %s; want A's %s (stale: %s)", got, current["event_id"], stale)
		}
		if !maps.Equal(onA, onB) {
			t.Errorf("B's current state after completion differs from A's:\n B %v\n A %v", onB, onA)
		}
		// The state before the join, which history and later snapshots rest on,
		// is resolved too.
		before, err := b.Rooms.StateIDsBefore(ctx, room, partial[0].JoinEventID)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(before, current["event_id"]) || slices.Contains(before, stale) {
			t.Errorf("state before bob's join on B = %v; want A's power levels %s, not the stale %s", before, current["event_id"], stale)
		}
	})
}
