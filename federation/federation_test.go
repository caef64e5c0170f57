package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// forEachEngine runs fn on every configured database engine, in parallel.
func forEachEngine(t *testing.T, fn func(t *testing.T, d storage.Dialect)) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, d)
		})
	}
}

type event struct {
	EventID  string         `json:"event_id"`
	Type     string         `json:"type"`
	StateKey string         `json:"state_key"`
	Sender   string         `json:"sender"`
	Content  map[string]any `json:"content"`
}

// waitFor polls until cond holds, for at most 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bodies returns the message bodies of the room's latest 50 events, oldest first.
func bodies(t *testing.T, c *testserver.Client, roomID string) []string {
	t.Helper()
	var page struct {
		Chunk []event `json:"chunk"`
	}
	c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil, &page)
	var out []string
	for i := len(page.Chunk) - 1; i >= 0; i-- {
		if b, ok := page.Chunk[i].Content["body"].(string); ok && page.Chunk[i].Type == "m.room.message" {
			out = append(out, b)
		}
	}
	return out
}

func send(t *testing.T, c *testserver.Client, roomID, txn, body string) string {
	t.Helper()
	var out map[string]string
	c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn,
		map[string]string{"msgtype": "m.text", "body": body}, &out)
	return out["event_id"]
}

// TestTwoServersChat: a user of server B joins a room hosted on server A through
// federation, and the two talk both ways — messages, typing, read receipts.
func TestTwoServersChat(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")

		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Across"}, &created)
		room := created["room_id"]
		before := send(t, alice, room, "a0", "before bob came")

		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		// B now knows the room's state, including its name and alice.
		var name map[string]string
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name", nil, &name)
		if name["name"] != "Across" {
			t.Errorf("room name on B = %v", name)
		}
		var members struct {
			Joined map[string]any `json:"joined"`
		}
		waitFor(t, "A to see bob joined", func() bool {
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &members)
			return members.Joined[bob.UserID] != nil
		})

		// An event goes to the servers in the room at that event: what alice said
		// before bob joined is not sent to B (B may only backfill it).
		after := send(t, bob, room, "b1", "hello from B")
		for _, tc := range []struct {
			event string
			want  []string
		}{{before, []string{a.Config.ServerName}}, {after, sortedNames(a.Config.ServerName, b.Config.ServerName)}} {
			waitFor(t, "A to hold the event", func() bool { ev, _ := a.Rooms.PDU(context.Background(), tc.event); return ev != nil })
			if got, err := a.Rooms.ServersAt(context.Background(), tc.event); err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("servers at %s = %v, %v; want %v", tc.event, got, err, tc.want)
			}
		}
		waitFor(t, "alice to get bob's message", func() bool { return slices.Contains(bodies(t, alice, room), "hello from B") })
		send(t, alice, room, "a1", "hello from A")
		waitFor(t, "bob to get alice's message", func() bool { return slices.Contains(bodies(t, bob, room), "hello from A") })

		// Order is the same on both sides.
		want := []string{"hello from B", "hello from A"}
		for _, c := range []*testserver.Client{alice, bob} {
			got := bodies(t, c, room)
			if len(got) < 2 || !slices.Equal(got[len(got)-2:], want) {
				t.Errorf("%s sees %v; want to end with %v", c.UserID, got, want)
			}
		}

		// Typing on A shows on B.
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/typing/"+url.PathEscape(alice.UserID),
			map[string]any{"typing": true, "timeout": 20000}, nil)
		waitFor(t, "bob to see alice typing", func() bool { return slices.Contains(typingIn(t, bob, room), alice.UserID) })

		// Bob's read receipt on B shows on A.
		last := send(t, alice, room, "a2", "read this")
		waitFor(t, "bob to get the message to read", func() bool { return slices.Contains(bodies(t, bob, room), "read this") })
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(last), map[string]any{}, nil)
		waitFor(t, "alice to see bob's receipt", func() bool { return readBy(t, alice, room, last, bob.UserID) })

		// Alice's presence on A shows on B.
		alice.MustDo("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status",
			map[string]any{"presence": "online", "status_msg": "on A"}, nil)
		waitFor(t, "bob to see alice's presence", func() bool {
			var p map[string]any
			bob.Do("GET", "/_matrix/client/v3/presence/"+url.PathEscape(alice.UserID)+"/status", nil, &p)
			return p["presence"] == "online" && p["status_msg"] == "on A"
		})

		// Bob leaves; A sees it.
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
		waitFor(t, "A to see bob leave", func() bool {
			members.Joined = nil
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &members)
			return members.Joined[bob.UserID] == nil
		})
	})
}

func sortedNames(names ...string) []string {
	slices.Sort(names)
	return names
}

// syncRoom returns one room's part of a full sync.
func syncRoom(t *testing.T, c *testserver.Client, roomID string) map[string]any {
	t.Helper()
	var s struct {
		Rooms struct {
			Join map[string]map[string]any `json:"join"`
		} `json:"rooms"`
	}
	c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &s)
	return s.Rooms.Join[roomID]
}

func ephemeral(t *testing.T, c *testserver.Client, roomID, typ string) []map[string]any {
	room := syncRoom(t, c, roomID)
	eph, _ := room["ephemeral"].(map[string]any)
	evs, _ := eph["events"].([]any)
	var out []map[string]any
	for _, e := range evs {
		if m, ok := e.(map[string]any); ok && m["type"] == typ {
			out = append(out, m)
		}
	}
	return out
}

func typingIn(t *testing.T, c *testserver.Client, roomID string) []string {
	var out []string
	for _, e := range ephemeral(t, c, roomID, "m.typing") {
		ids, _ := e["content"].(map[string]any)["user_ids"].([]any)
		for _, id := range ids {
			out = append(out, id.(string))
		}
	}
	return out
}

func readBy(t *testing.T, c *testserver.Client, roomID, eventID, userID string) bool {
	for _, e := range ephemeral(t, c, roomID, "m.receipt") {
		byEvent, _ := e["content"].(map[string]any)[eventID].(map[string]any)
		read, _ := byEvent["m.read"].(map[string]any)
		if read[userID] != nil {
			return true
		}
	}
	return false
}

// joinedPair starts servers A and B, has alice create a public room on A and bob on
// B join it, and waits until A has seen the join.
func joinedPair(t *testing.T, d storage.Dialect) (a, b *testserver.Server, alice, bob *testserver.Client, room string) {
	t.Helper()
	a = testserver.Start(t, d, testserver.Federated)
	b = testserver.Start(t, d, testserver.Federated)
	alice = a.Register(t, "alice", "pw")
	bob = b.Register(t, "bob", "pw")
	var created map[string]string
	alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
	room = created["room_id"]
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	waitFor(t, "A to see bob join", func() bool {
		var members struct {
			Joined map[string]any `json:"joined"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &members)
		return members.Joined[bob.UserID] != nil
	})
	// B joined with partial state (the default); the tests built on this pair
	// start from a whole one (TestPartialStateJoin covers the partial time).
	waitFor(t, "B to have the room's whole state", func() bool {
		partial, err := b.Rooms.StatePartial(context.Background(), room)
		return err == nil && !partial
	})
	return a, b, alice, bob, room
}

// TestCatchUpAfterRestart: B goes down, A keeps talking, B comes back and gets every
// message A queued for it, in order.
func TestCatchUpAfterRestart(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, room := joinedPair(t, d)
		_ = a
		b.Stop()
		var want []string
		for i := range 12 {
			body := fmt.Sprintf("while B was down %d", i)
			send(t, alice, room, fmt.Sprintf("down%d", i), body)
			want = append(want, body)
		}
		waitFor(t, "A to try B while it is down", func() bool { return b.FederationTurnedAway() > 0 })
		b.Resume(t)
		waitFor(t, "B to catch up", func() bool {
			got := bodies(t, bob, room)
			return len(got) >= len(want) && slices.Equal(got[len(got)-len(want):], want)
		})
		// And B talks again: A hears it.
		send(t, bob, room, "back", "I am back")
		waitFor(t, "A to hear B again", func() bool { return slices.Contains(bodies(t, alice, room), "I am back") })
	})
}

// TestForgedAndForeignEventsRefused sends A three events by federation: one from B
// with a signature B's key did not make, one from a server with nobody in the room,
// and, as the control that the path works at all, one B really signed. Only the
// last is stored.
func TestForgedAndForeignEventsRefused(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, room := joinedPair(t, d)
		c := testserver.Start(t, d, testserver.Federated)
		mallory := c.Register(t, "mallory", "pw")

		var state []event
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state", nil, &state)
		authFor := func(sender string) []string {
			var ids []string
			for _, ev := range state {
				if ev.Type == "m.room.create" || ev.Type == "m.room.power_levels" {
					ids = append(ids, ev.EventID)
				}
				if ev.Type == "m.room.member" && ev.StateKey == sender {
					ids = append(ids, ev.EventID)
				}
			}
			return ids
		}
		var latest struct {
			Chunk []event `json:"chunk"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=1", nil, &latest)
		build := func(sender, origin string, keyID string, key ed25519.PrivateKey, body string) gomatrixserverlib.PDU {
			t.Helper()
			proto := gomatrixserverlib.ProtoEvent{
				SenderID: sender, RoomID: room, Type: "m.room.message",
				Content:    spec.RawJSON(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body)),
				PrevEvents: []string{latest.Chunk[0].EventID}, AuthEvents: authFor(sender), Depth: 100,
			}
			ev, err := gomatrixserverlib.MustGetRoomVersion("10").NewEventBuilderFromProtoEvent(&proto).
				Build(time.Now(), spec.ServerName(origin), gomatrixserverlib.KeyID(keyID), key)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		sendAs := func(srv *testserver.Server, ev gomatrixserverlib.PDU) {
			t.Helper()
			client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(srv.Config.ServerName),
				KeyID: gomatrixserverlib.KeyID(srv.Key.ID), PrivateKey: srv.Key.PrivateKey}}, fclient.WithSkipVerify(true))
			_, err := client.SendTransaction(context.Background(), gomatrixserverlib.Transaction{
				TransactionID: gomatrixserverlib.TransactionID("t-" + ev.EventID()), Origin: spec.ServerName(srv.Config.ServerName),
				Destination: spec.ServerName(a.Config.ServerName), OriginServerTS: spec.AsTimestamp(time.Now()),
				PDUs: []json.RawMessage{ev.JSON()},
			})
			if err != nil {
				t.Fatalf("send transaction: %v", err)
			}
		}
		_, wrongKey, _ := ed25519.GenerateKey(nil)
		forged := build(bob.UserID, b.Config.ServerName, b.Key.ID, wrongKey, "forged as bob")
		foreign := build(mallory.UserID, c.Config.ServerName, c.Key.ID, c.Key.PrivateKey, "from outside")
		genuine := build(bob.UserID, b.Config.ServerName, b.Key.ID, b.Key.PrivateKey, "really bob")
		sendAs(b, forged)
		sendAs(c, foreign)
		sendAs(b, genuine)

		for _, tc := range []struct {
			ev     gomatrixserverlib.PDU
			status int
		}{{forged, 404}, {foreign, 404}, {genuine, 200}} {
			if st := alice.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(tc.ev.EventID()), nil, nil); st != tc.status {
				t.Errorf("event %q on A: status %d; want %d", gjsonBody(tc.ev), st, tc.status)
			}
		}
	})
}

func gjsonBody(ev gomatrixserverlib.PDU) string {
	var c struct {
		Body string `json:"body"`
	}
	json.Unmarshal(ev.Content(), &c)
	return c.Body
}

// TestRemoteInvite: alice on A invites bob and carol on B into an invite-only room.
// B countersigns the invites; bob sees his in sync with the room's name and joins;
// carol rejects hers, and A sees both answers.
func TestRemoteInvite(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")
		carol := b.Register(t, "carol", "pw")
		var created map[string]string
		// Carol is invited with the room's creation, bob afterwards.
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Invite only",
			"invite": []string{carol.UserID}}, &created)
		room := created["room_id"]
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]string{"user_id": bob.UserID}, nil)

		var s struct {
			Rooms struct {
				Invite map[string]struct {
					InviteState struct {
						Events []event `json:"events"`
					} `json:"invite_state"`
				} `json:"invite"`
			} `json:"rooms"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &s)
		inv, ok := s.Rooms.Invite[room]
		if !ok {
			t.Fatalf("bob's sync has no invite to %s: %+v", room, s.Rooms.Invite)
		}
		var sawName, sawInvite bool
		for _, ev := range inv.InviteState.Events {
			sawName = sawName || (ev.Type == "m.room.name" && ev.Content["name"] == "Invite only")
			sawInvite = sawInvite || (ev.Type == "m.room.member" && ev.StateKey == bob.UserID && ev.Content["membership"] == "invite")
		}
		if !sawName || !sawInvite {
			t.Errorf("invite state = %+v; want the room name and bob's invite", inv.InviteState.Events)
		}

		// Carol rejects while B has nobody in the room (make_leave/send_leave through
		// A); then bob joins.
		carol.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		membership := func(u string) string {
			var m map[string]any
			if alice.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(u), nil, &m) != 200 {
				return ""
			}
			s, _ := m["membership"].(string)
			return s
		}
		waitFor(t, "A to see bob join and carol reject", func() bool { return membership(bob.UserID) == "join" && membership(carol.UserID) == "leave" })
		send(t, bob, room, "hi", "thanks for the invite")
		waitFor(t, "alice to hear bob", func() bool { return slices.Contains(bodies(t, alice, room), "thanks for the invite") })
	})
}

// TestDirectoryOverFederation: B reads A's room directory with a signed request, and
// a user on B resolves an alias of A and joins the room by it.
func TestDirectoryOverFederation(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "visibility": "public",
			"name": "Listed", "room_alias_name": "listed"}, &created)
		// Profiles of other servers' users come from their servers.
		alice.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID)+"/displayname", map[string]string{"displayname": "Alice of A"}, nil)
		var prof map[string]string
		bob.MustDo("GET", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID)+"/displayname", nil, &prof)
		if prof["displayname"] != "Alice of A" {
			t.Errorf("alice's displayname on B = %v", prof)
		}
		alias := "#listed:" + a.Config.ServerName
		var resolved struct {
			RoomID  string   `json:"room_id"`
			Servers []string `json:"servers"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil, &resolved)
		if resolved.RoomID != created["room_id"] || !slices.Contains(resolved.Servers, a.Config.ServerName) {
			t.Errorf("alias resolved on B = %+v; want %s via %s", resolved, created["room_id"], a.Config.ServerName)
		}
		var e struct {
			ErrCode string `json:"errcode"`
		}
		if st := bob.Do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#nosuch:"+a.Config.ServerName), nil, &e); st != 404 || e.ErrCode != "M_NOT_FOUND" {
			t.Errorf("unknown remote alias = %d %s; want 404 M_NOT_FOUND", st, e.ErrCode)
		}
		var joined map[string]string
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{}, &joined)
		if joined["room_id"] != created["room_id"] {
			t.Errorf("join by alias = %v", joined)
		}
		client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(b.Config.ServerName),
			KeyID: gomatrixserverlib.KeyID(b.Key.ID), PrivateKey: b.Key.PrivateKey}}, fclient.WithSkipVerify(true))
		res, err := client.GetPublicRooms(context.Background(), spec.ServerName(b.Config.ServerName), spec.ServerName(a.Config.ServerName), 10, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Chunk) != 1 || res.Chunk[0].RoomID != created["room_id"] || res.Chunk[0].Name != "Listed" {
			t.Errorf("A's directory over federation = %+v", res.Chunk)
		}
		var listed struct {
			Chunk []struct {
				RoomID string `json:"room_id"`
			} `json:"chunk"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape(a.Config.ServerName), nil, &listed)
		if len(listed.Chunk) != 1 || listed.Chunk[0].RoomID != created["room_id"] {
			t.Errorf("A's directory through B's client API = %+v", listed.Chunk)
		}

		// A room that does not federate keeps other servers out.
		var local map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat",
			"creation_content": map[string]any{"m.federate": false}}, &local)
		// A's refusal reaches bob's client as A gave it.
		if st := bob.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(local["room_id"]), map[string]any{}, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
			t.Errorf("joining a room that does not federate = %d %s; want 403 M_FORBIDDEN", st, e.ErrCode)
		}
	})
}

// lowerTopicLevel lets everyone set the topic and gives bob level in the room's
// power levels, waits until B has them, and returns them.
func lowerTopicLevel(t *testing.T, alice, bob *testserver.Client, room string, level int) map[string]any {
	t.Helper()
	var pl map[string]any
	alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels", nil, &pl)
	pl["events"].(map[string]any)["m.room.topic"] = 0
	pl["users"].(map[string]any)[bob.UserID] = level
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", pl, nil)
	waitFor(t, "B to get the power levels", func() bool {
		var got map[string]any
		bob.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels", nil, &got)
		ev, _ := got["events"].(map[string]any)
		return ev["m.room.topic"] == float64(0)
	})
	return pl
}

// stateField is a string field of a state event of the room as c sees it.
func stateField(c *testserver.Client, room, typ, field string) string {
	var m map[string]any
	c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+typ, nil, &m)
	s, _ := m[field].(string)
	return s
}

// waitBothHold waits until every client holds every message body in the room.
func waitBothHold(t *testing.T, room string, a, b *testserver.Client, want ...string) {
	t.Helper()
	waitFor(t, "both servers to hold every message", func() bool {
		for _, c := range []*testserver.Client{a, b} {
			got := bodies(t, c, room)
			for _, w := range want {
				if !slices.Contains(got, w) {
					return false
				}
			}
		}
		return true
	})
}

// TestForkResolvesTheSameOnBothServers partitions A and B, has each change the
// room's topic while the other cannot hear it, and heals the partition. Each server
// then holds two forward extremities with conflicting state and must resolve them
// with state resolution v2: by mainline (both topics rest on the same power levels),
// then by timestamp, the later change wins — on both servers.
func TestForkResolvesTheSameOnBothServers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, room := joinedPair(t, d)
		// Bob may set the topic (its level lowered for everyone) and, as an admin, the
		// join rules.
		lowerTopicLevel(t, alice, bob, room, 100)
		topic := func(c *testserver.Client) string { return stateField(c, room, "m.room.topic", "topic") }
		// Partition: each side changes the topic without the other.
		b.Stop()
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]string{"topic": "A's topic"}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.join_rules/", map[string]string{"join_rule": "invite"}, nil)
		a.Stop()
		b.Resume(t)
		time.Sleep(20 * time.Millisecond) // a later origin_server_ts than A's change
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]string{"topic": "B's topic"}, nil)
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.join_rules/", map[string]string{"join_rule": "knock"}, nil)
		send(t, bob, room, "fork-b", "said on B during the partition")
		a.Resume(t)
		send(t, alice, room, "fork-a", "said on A after the partition")

		waitBothHold(t, room, alice, bob, "said on B during the partition", "said on A after the partition")
		waitFor(t, "the topic to converge", func() bool { return topic(alice) == "B's topic" && topic(bob) == "B's topic" })
		joinRule := func(c *testserver.Client) string { return stateField(c, room, "m.room.join_rules", "join_rule") }
		// Join rules are power events: resolved first, by reverse topological power
		// ordering — equal power, so the earlier timestamp sorts first and the later
		// change is applied last and stands.
		waitFor(t, "the join rules to converge", func() bool { return joinRule(alice) == "knock" && joinRule(bob) == "knock" })
	})
}

// TestPowerForkResolvesTheSameOnBothServers is the partition of
// TestForkResolvesTheSameOnBothServers with a power change in it: while apart, alice
// demotes bob on A and bob changes the join rules on B. State resolution v2 orders
// the power events (equal sender power, so by timestamp: alice's first), then checks
// each against the state resolved so far — bob, demoted, may no longer change the
// join rules, so his change is dropped on both servers, and his demotion stands.
// (Bob starts as a moderator at 50, alice is at 100: the higher sender sorts first
// whatever the timestamps.)
func TestPowerForkResolvesTheSameOnBothServers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, room := joinedPair(t, d)
		// Bob may set the topic (its level lowered for everyone) and, as an admin, the
		// join rules.
		pl := lowerTopicLevel(t, alice, bob, room, 50)
		topic := func(c *testserver.Client) string { return stateField(c, room, "m.room.topic", "topic") }
		// Partition: each side changes the topic without the other.
		b.Stop()
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]string{"topic": "A's topic"}, nil)
		demoted := map[string]any{}
		for k, v := range pl {
			demoted[k] = v
		}
		users := map[string]any{}
		for k, v := range pl["users"].(map[string]any) {
			users[k] = v
		}
		users[bob.UserID] = 0
		demoted["users"] = users
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", demoted, nil)
		a.Stop()
		b.Resume(t)
		time.Sleep(20 * time.Millisecond) // a later origin_server_ts than A's change
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]string{"topic": "B's topic"}, nil)
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.join_rules/", map[string]string{"join_rule": "knock"}, nil)
		send(t, bob, room, "fork-b", "said on B during the partition")
		a.Resume(t)
		send(t, alice, room, "fork-a", "said on A after the partition")

		waitBothHold(t, room, alice, bob, "said on B during the partition", "said on A after the partition")
		waitFor(t, "the topic to converge", func() bool { return topic(alice) == "B's topic" && topic(bob) == "B's topic" })
		joinRule := func(c *testserver.Client) string { return stateField(c, room, "m.room.join_rules", "join_rule") }
		bobLevel := func(c *testserver.Client) any {
			var m map[string]any
			c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels", nil, &m)
			u, _ := m["users"].(map[string]any)
			return u[bob.UserID]
		}
		waitFor(t, "the join rules and power levels to converge", func() bool {
			return joinRule(alice) == "public" && joinRule(bob) == "public" && bobLevel(alice) == float64(0) && bobLevel(bob) == float64(0)
		})
	})
}

// TestPerOriginRateLimit: past its burst an origin gets M_LIMIT_EXCEEDED, and other
// origins are not held up by it.
func TestPerOriginRateLimit(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		limited := func(c *config.Config) {
			c.RateLimit.Enabled = true
			c.Federation.RatePerSecond, c.Federation.RateBurst = 0.01, 3
		}
		a := testserver.Start(t, d, testserver.Federated, limited)
		a.Register(t, "alice", "pw")
		ask := func(from *testserver.Server) error {
			client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(from.Config.ServerName),
				KeyID: gomatrixserverlib.KeyID(from.Key.ID), PrivateKey: from.Key.PrivateKey}}, fclient.WithSkipVerify(true))
			_, err := client.LookupProfile(context.Background(), spec.ServerName(from.Config.ServerName), spec.ServerName(a.Config.ServerName),
				"@alice:"+a.Config.ServerName, "")
			return err
		}
		b := testserver.Start(t, d, testserver.Federated)
		c := testserver.Start(t, d, testserver.Federated)
		for i := range 3 {
			if err := ask(b); err != nil {
				t.Fatalf("request %d within the burst: %v", i, err)
			}
		}
		err := ask(b)
		var httpErr gomatrix.HTTPError
		if !errors.As(err, &httpErr) || httpErr.Code != 429 {
			t.Errorf("request past the burst = %v; want 429", err)
		}
		if err := ask(c); err != nil {
			t.Errorf("another origin's request = %v; want it served", err)
		}
	})
}

// signedGet makes a GET request signed as server from to server to.
func signedGet(t *testing.T, from, to *testserver.Server, path string, out any) error {
	t.Helper()
	return signedRequest(t, from, to, "GET", path, nil, out)
}

// TestTimestampToEventOverFederation: B asks A which event was sent at a time.
func TestTimestampToEventOverFederation(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, _, room := joinedPair(t, d)
		c := testserver.Start(t, d, testserver.Federated)
		first := send(t, alice, room, "t1", "first")
		time.Sleep(10 * time.Millisecond)
		mid := time.Now().UnixMilli()
		time.Sleep(10 * time.Millisecond)
		second := send(t, alice, room, "t2", "second")
		var got struct {
			EventID string `json:"event_id"`
		}
		for _, tc := range []struct{ dir, want string }{{"b", first}, {"f", second}} {
			path := fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=%s", url.PathEscape(room), mid, tc.dir)
			if err := signedGet(t, b, a, path, &got); err != nil || got.EventID != tc.want {
				t.Errorf("timestamp_to_event dir=%s = %q, %v; want %s", tc.dir, got.EventID, err, tc.want)
			}
		}
		// A server with nobody in the room is refused.
		path := fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=b", url.PathEscape(room), mid)
		var httpErr gomatrix.HTTPError
		if err := signedGet(t, c, a, path, &got); !errors.As(err, &httpErr) || httpErr.Code != 403 {
			t.Errorf("timestamp_to_event from outside the room = %v; want 403", err)
		}
	})
}

// TestOpenID: a user proves who they are to a third party (a widget, an integration
// manager) with a token the third party checks at the user's server.
func TestOpenID(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		var tok struct {
			AccessToken      string `json:"access_token"`
			TokenType        string `json:"token_type"`
			MatrixServerName string `json:"matrix_server_name"`
			ExpiresIn        int    `json:"expires_in"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/openid/request_token", map[string]any{}, &tok)
		if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.MatrixServerName != a.Config.ServerName || tok.ExpiresIn <= 0 {
			t.Fatalf("openid token = %+v", tok)
		}
		third := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		userinfo := func(token string) (int, map[string]string) {
			resp, err := third.Get(a.FederationURL + "/_matrix/federation/v1/openid/userinfo?access_token=" + url.QueryEscape(token))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]string
			json.NewDecoder(resp.Body).Decode(&out)
			return resp.StatusCode, out
		}
		if st, out := userinfo(tok.AccessToken); st != 200 || out["sub"] != alice.UserID {
			t.Errorf("userinfo = %d %v; want alice", st, out)
		}
		if st, out := userinfo("forged"); st != 401 || out["errcode"] != "M_UNKNOWN_TOKEN" {
			t.Errorf("userinfo of an unknown token = %d %v; want 401 M_UNKNOWN_TOKEN", st, out)
		}
		var e struct {
			ErrCode string `json:"errcode"`
		}
		if st := alice.Do("POST", "/_matrix/client/v3/user/@someone:elsewhere/openid/request_token", map[string]any{}, &e); st != 403 {
			t.Errorf("token for another user = %d %s; want 403", st, e.ErrCode)
		}
	})
}

// TestRemoteKnock: bob on B knocks on a knock-only room on A, sees it as knocked in
// sync, is let in by alice's invite and joins.
func TestRemoteKnock(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Knock first",
			"initial_state": []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]string{"join_rule": "knock"}}}}, &created)
		room := created["room_id"]
		var e struct {
			ErrCode string `json:"errcode"`
		}
		if st := bob.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, &e); st == 200 {
			t.Fatal("bob joined a knock-only room without an invite")
		}
		bob.MustDo("POST", "/_matrix/client/v3/knock/"+url.PathEscape(room), map[string]string{"reason": "let me in"}, nil)
		membership := func(c *testserver.Client, u string) string {
			var m map[string]any
			if c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(u), nil, &m) != 200 {
				return ""
			}
			s, _ := m["membership"].(string)
			return s
		}
		waitFor(t, "A to see bob knock", func() bool { return membership(alice, bob.UserID) == "knock" })
		var s struct {
			Rooms struct {
				Knock map[string]struct {
					KnockState struct {
						Events []event `json:"events"`
					} `json:"knock_state"`
				} `json:"knock"`
			} `json:"rooms"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &s)
		knocked, ok := s.Rooms.Knock[room]
		if !ok {
			t.Fatalf("bob's sync has no knock on %s", room)
		}
		var sawName bool
		for _, ev := range knocked.KnockState.Events {
			sawName = sawName || (ev.Type == "m.room.name" && ev.Content["name"] == "Knock first")
		}
		if !sawName {
			t.Errorf("knock state = %+v; want the room's name", knocked.KnockState.Events)
		}
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]string{"user_id": bob.UserID}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		waitFor(t, "A to see bob join", func() bool { return membership(alice, bob.UserID) == "join" })
	})
}

// TestBackfillHistory: bob joins a room on A that already has history; paging back
// on B fetches it from A (/backfill) and shows it in order, down to the room's
// creation.
func TestBackfillHistory(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		room := created["room_id"]
		var want []string
		for i := range 45 {
			body := fmt.Sprintf("before bob %02d", i)
			send(t, alice, room, fmt.Sprintf("h%d", i), body)
			want = append(want, body)
		}
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)

		var got []string
		var types []string
		from := ""
		for page := 0; page < 20; page++ {
			var res struct {
				Chunk []event `json:"chunk"`
				End   string  `json:"end"`
			}
			path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=b&limit=10"
			if from != "" {
				path += "&from=" + url.QueryEscape(from)
			}
			bob.MustDo("GET", path, nil, &res)
			for _, ev := range res.Chunk {
				types = append(types, ev.Type)
				if ev.Type == "m.room.message" {
					got = append([]string{ev.Content["body"].(string)}, got...)
				}
			}
			if res.End == "" {
				break
			}
			from = res.End
		}
		if !slices.Equal(got, want) {
			t.Errorf("history on B = %d messages %v; want the %d sent before bob joined, in order", len(got), got, len(want))
		}
		if len(types) == 0 || types[len(types)-1] != "m.room.create" {
			t.Errorf("paging back on B ends at %v; want the room's creation", types[max(0, len(types)-3):])
		}
	})
}

// TestJoinAcrossRoomVersions joins and talks over federation in rooms of the
// versions with different event formats: 1 (event IDs with server names, hashed
// references), 3 (hash IDs), 10, and 12 (room IDs from the create event).
func TestJoinAcrossRoomVersions(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")
		for _, v := range []string{"1", "3", "10", "12"} {
			var created map[string]string
			alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_version": v}, &created)
			room := created["room_id"]
			via := ""
			if !strings.Contains(room, ":") {
				via = "?server_name=" + url.QueryEscape(a.Config.ServerName) // v12 room IDs name no server
			}
			bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+via, map[string]any{}, nil)
			send(t, bob, room, "v"+v, "hello in version "+v)
			waitFor(t, "alice to hear bob in version "+v, func() bool { return slices.Contains(bodies(t, alice, room), "hello in version "+v) })
			send(t, alice, room, "v"+v, "back in version "+v)
			waitFor(t, "bob to hear alice in version "+v, func() bool { return slices.Contains(bodies(t, bob, room), "back in version "+v) })
		}
	})
}

// TestServerACLOverFederation: once the room's server ACL denies B, A refuses B's
// events and B's reads of the room.
func TestServerACLOverFederation(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, room := joinedPair(t, d)
		send(t, bob, room, "before", "before the ban")
		waitFor(t, "alice to hear bob", func() bool { return slices.Contains(bodies(t, alice, room), "before the ban") })
		var latest struct {
			Chunk []event `json:"chunk"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=1", nil, &latest)
		path := "/_matrix/federation/v1/state_ids/" + url.PathEscape(room) + "?event_id=" + url.QueryEscape(latest.Chunk[0].EventID)
		var ids map[string]any
		if err := signedGet(t, b, a, path, &ids); err != nil {
			t.Fatalf("state_ids before the ban: %v", err)
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.server_acl/",
			map[string]any{"allow": []string{"*"}, "deny": []string{b.Config.ServerName}}, nil)
		var httpErr gomatrix.HTTPError
		if err := signedGet(t, b, a, path, &ids); !errors.As(err, &httpErr) || httpErr.Code != 403 {
			t.Errorf("state_ids after the ban = %v; want 403", err)
		}
		// Wait for A to answer the transaction that carries B's event, then check
		// that A did not store it.
		answered := a.FederationAnswered("/send/", "after the ban")
		send(t, bob, room, "after", "after the ban")
		select {
		case <-answered:
		case <-time.After(20 * time.Second):
			t.Fatal("A never answered the transaction carrying B's event")
		}
		if slices.Contains(bodies(t, alice, room), "after the ban") {
			t.Error("A accepted an event from a server its ACL denies")
		}
	})
}

// TestHierarchyOverFederation: B previews a space on A: the space, its public child,
// and its private child named as inaccessible.
func TestHierarchyOverFederation(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		var space, open, closed map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Space",
			"creation_content": map[string]any{"type": "m.space"}}, &space)
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Open"}, &open)
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Closed"}, &closed)
		for _, child := range []string{open["room_id"], closed["room_id"]} {
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(space["room_id"])+"/state/m.space.child/"+url.PathEscape(child),
				map[string]any{"via": []string{a.Config.ServerName}}, nil)
		}
		client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(b.Config.ServerName),
			KeyID: gomatrixserverlib.KeyID(b.Key.ID), PrivateKey: b.Key.PrivateKey}}, fclient.WithSkipVerify(true))
		res, err := client.RoomHierarchy(context.Background(), spec.ServerName(b.Config.ServerName), spec.ServerName(a.Config.ServerName), space["room_id"], false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Room.RoomID != space["room_id"] || len(res.Room.ChildrenState) != 2 {
			t.Errorf("space = %+v; want it with its two children's events", res.Room)
		}
		if len(res.Children) != 1 || res.Children[0].RoomID != open["room_id"] {
			t.Errorf("children = %+v; want the open room only", res.Children)
		}
		if len(res.InaccessibleChildren) != 1 || res.InaccessibleChildren[0] != closed["room_id"] {
			t.Errorf("inaccessible = %v; want the closed room", res.InaccessibleChildren)
		}

		// Bob on B joins the space (not its rooms); his client's /hierarchy shows the
		// open room, which only A holds, as A described it.
		bob := b.Register(t, "bob", "pw")
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(space["room_id"]), map[string]any{}, nil)
		var h struct {
			Rooms []struct {
				RoomID string `json:"room_id"`
				Name   string `json:"name"`
			} `json:"rooms"`
		}
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(space["room_id"])+"/hierarchy", nil, &h)
		var names []string
		for _, r := range h.Rooms {
			names = append(names, r.Name)
		}
		if !slices.Equal(names, []string{"Space", "Open"}) {
			t.Errorf("bob's hierarchy on B = %v; want the space and the open room", names)
		}
	})
}

// TestSendJoinOmitMembers: asked for partial state (omit_members, MSC3706), A answers
// send_join with the room's state minus its member events, says so, and lists the
// servers in the room to fetch the rest from.
func TestSendJoinOmitMembers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Big"}, &created)
		room := created["room_id"]
		for _, u := range []string{"m1", "m2", "m3"} {
			a.Register(t, u, "pw").MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		}
		ctx := context.Background()
		origin := spec.ServerName(b.Config.ServerName)
		client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: origin,
			KeyID: gomatrixserverlib.KeyID(b.Key.ID), PrivateKey: b.Key.PrivateKey}}, fclient.WithSkipVerify(true))
		joiner := "@bob:" + b.Config.ServerName
		mj, err := client.MakeJoin(ctx, origin, spec.ServerName(a.Config.ServerName), room, joiner)
		if err != nil {
			t.Fatal(err)
		}
		proto := mj.JoinEvent
		impl := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion)
		ev, err := impl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), origin, gomatrixserverlib.KeyID(b.Key.ID), b.Key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.SendJoinPartialState(ctx, origin, spec.ServerName(a.Config.ServerName), ev)
		if err != nil {
			t.Fatal(err)
		}
		if !res.MembersOmitted || !slices.Contains(res.ServersInRoom, a.Config.ServerName) {
			t.Errorf("members_omitted = %v, servers_in_room = %v", res.MembersOmitted, res.ServersInRoom)
		}
		var sawName bool
		for _, st := range res.StateEvents.UntrustedEvents(mj.RoomVersion) {
			if st.Type() == "m.room.member" {
				t.Errorf("partial state holds member event of %s", *st.StateKey())
			}
			sawName = sawName || st.Type() == "m.room.name"
		}
		if !sawName || len(res.AuthEvents) == 0 {
			t.Errorf("partial state lacks the room name or the auth chain (%d events)", len(res.AuthEvents))
		}
	})
}

// TestPartialStateJoin: bob on B joins a room on A with partial state (the member
// events left out), can talk at once, and gets the rest of the state in the
// background — here from C, a third server send_join named in servers_in_room, as A
// goes down right after the join. Carol on C hears bob meanwhile, and A, back, too.
func TestPartialStateJoin(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated) // partial-state joins are the default
		c := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")
		carol := c.Register(t, "carol", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		room := created["room_id"]
		for _, u := range []string{"m1", "m2", "m3"} {
			a.Register(t, u, "pw").MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		}
		carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		joined := func(cl *testserver.Client) int {
			var m struct {
				Joined map[string]any `json:"joined"`
			}
			cl.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &m)
			return len(m.Joined)
		}
		waitFor(t, "A to see carol", func() bool { return joined(alice) == 5 })
		waitFor(t, "C to have the room's whole state", func() bool {
			partial, err := c.Rooms.StatePartial(context.Background(), room)
			return err == nil && !partial
		})

		// Neither A nor C answers /state until released: the room stays partial.
		// A then stops, so the rest of the state has to come from C.
		a.HoldFederation(t, "/state/")
		releaseC := c.HoldFederation(t, "/state/")
		since := syncToken(t, bob, "")
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		a.Stop()
		if partial, err := b.Rooms.PartialStateRooms(context.Background()); err != nil || len(partial) != 1 || partial[0].RoomID != room {
			t.Fatalf("partial-state rooms on B = %+v, %v; want this room", partial, err)
		}
		// A client lazy-loading members sees the room at once; one that is not
		// does not until the state is whole (it would take the partial member
		// list for the room's), as with Synapse.
		lazy := "&filter=" + url.QueryEscape(`{"room":{"state":{"lazy_load_members":true}}}`)
		if members, ok, _ := syncedMembers(t, bob, since, room, lazy); !ok || !members[bob.UserID] || members["@m1:"+a.Config.ServerName] {
			t.Errorf("lazy-loading sync with partial state: room there %v, members %v", ok, members)
		}
		_, ok, since := syncedMembers(t, bob, since, room, "&timeout=0")
		if ok {
			t.Errorf("a sync that does not lazy-load members shows the partial-state room")
		}
		// Bob talks at once; carol, on a server send_join named, hears him.
		send(t, bob, room, "p1", "talking with partial state")
		waitFor(t, "carol to hear bob", func() bool { return slices.Contains(bodies(t, carol, room), "talking with partial state") })
		send(t, carol, room, "p2", "heard you")
		waitFor(t, "bob to hear carol", func() bool { return slices.Contains(bodies(t, bob, room), "heard you") })

		releaseC()
		waitFor(t, "B to complete the room's state", func() bool { return joined(bob) == 6 })
		partial, err := b.Rooms.PartialStateRooms(context.Background())
		if err != nil || len(partial) != 0 {
			t.Errorf("partial-state rooms on B after completion = %+v, %v; want none", partial, err)
		}
		// The next incremental sync brings the room, as newly joined, with the
		// members B learned in the background.
		members, _, _ := syncedMembers(t, bob, since, room, "&timeout=10000")
		for _, u := range []string{alice.UserID, "@m1:" + a.Config.ServerName, "@m3:" + a.Config.ServerName, carol.UserID} {
			if !members[u] {
				t.Errorf("incremental sync after completion lacks %s's membership (has %v)", u, members)
			}
		}
		a.Resume(t)
		waitFor(t, "alice to hear bob", func() bool { return slices.Contains(bodies(t, alice, room), "talking with partial state") })
	})
}

// syncToken is the next_batch of a sync from since ("" for an initial sync).
func syncToken(t *testing.T, c *testserver.Client, since string) string {
	t.Helper()
	var resp struct {
		NextBatch string `json:"next_batch"`
	}
	path := "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		path += "&since=" + url.QueryEscape(since)
	}
	c.MustDo("GET", path, nil, &resp)
	return resp.NextBatch
}

// syncedMembers syncs from since (query adds parameters) and returns the joined
// members in the room's state and timeline, whether the room was in the answer,
// and next_batch.
func syncedMembers(t *testing.T, c *testserver.Client, since, room, query string) (map[string]bool, bool, string) {
	t.Helper()
	var resp struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				State    struct{ Events []event } `json:"state"`
				Timeline struct{ Events []event } `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	c.MustDo("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(since)+query, nil, &resp)
	out := map[string]bool{}
	jr, ok := resp.Rooms.Join[room]
	for _, ev := range append(jr.State.Events, jr.Timeline.Events...) {
		if ev.Type == "m.room.member" && ev.Content["membership"] == "join" {
			out[ev.StateKey] = true
		}
	}
	return out, ok, resp.NextBatch
}

// TestJoinAndMessageInOneTransaction: a server not yet in a room sends its user's
// join and a first message in the same /send transaction; both are admitted.
func TestJoinAndMessageInOneTransaction(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		c := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		room := created["room_id"]
		ctx := context.Background()
		origin := spec.ServerName(c.Config.ServerName)
		client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: origin,
			KeyID: gomatrixserverlib.KeyID(c.Key.ID), PrivateKey: c.Key.PrivateKey}}, fclient.WithSkipVerify(true))
		dave := "@dave:" + c.Config.ServerName
		mj, err := client.MakeJoin(ctx, origin, spec.ServerName(a.Config.ServerName), room, dave)
		if err != nil {
			t.Fatal(err)
		}
		impl := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion)
		proto := mj.JoinEvent
		join, err := impl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), origin, gomatrixserverlib.KeyID(c.Key.ID), c.Key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		var auth []string
		for _, id := range join.AuthEventIDs() {
			if id != join.EventID() {
				auth = append(auth, id)
			}
		}
		msgProto := gomatrixserverlib.ProtoEvent{SenderID: dave, RoomID: room, Type: "m.room.message",
			Content: spec.RawJSON(`{"msgtype":"m.text","body":"first words"}`), PrevEvents: []string{join.EventID()},
			AuthEvents: append(slices.DeleteFunc(slices.Clone(auth), func(id string) bool {
				ev, _ := a.Rooms.PDU(ctx, id)
				return ev != nil && ev.Type() == "m.room.join_rules"
			}), join.EventID()), Depth: join.Depth() + 1}
		msg, err := impl.NewEventBuilderFromProtoEvent(&msgProto).Build(time.Now(), origin, gomatrixserverlib.KeyID(c.Key.ID), c.Key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.SendTransaction(ctx, gomatrixserverlib.Transaction{TransactionID: "join-and-talk", Origin: origin,
			Destination: spec.ServerName(a.Config.ServerName), OriginServerTS: spec.AsTimestamp(time.Now()),
			PDUs: []json.RawMessage{join.JSON(), msg.JSON()}})
		if err != nil {
			t.Fatal(err)
		}
		for id, r := range res.PDUs {
			if r.Error != "" {
				t.Errorf("PDU %s refused: %s", id, r.Error)
			}
		}
		if !slices.Contains(bodies(t, alice, room), "first words") {
			t.Error("A does not show the message sent with the join")
		}
	})
}

// TestTrustedKeyServer: A's room is joined by C; A goes down. B, trusting C as a
// key server, joins through C and verifies A's events with A's key as C vouches
// for it. D, trusting nobody, cannot: A's key is nowhere else to be had.
func TestTrustedKeyServer(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		c := testserver.Start(t, d, testserver.Federated)
		alice, carol := a.Register(t, "alice", "pw"), c.Register(t, "carol", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		room := created["room_id"]
		carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		waitFor(t, "C to have the room's whole state", func() bool {
			partial, err := c.Rooms.StatePartial(context.Background(), room)
			return err == nil && !partial
		})
		a.Stop()

		via := "?server_name=" + url.QueryEscape(c.Config.ServerName)
		dsrv := testserver.Start(t, d, testserver.Federated)
		dave := dsrv.Register(t, "dave", "pw")
		// The same join as B's below, without a trusted key server: refused.
		if st := dave.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+via, map[string]any{}, nil); st == 200 {
			t.Fatalf("D joined without any way to learn A's key")
		}

		b := testserver.Start(t, d, testserver.Federated, func(cfg *config.Config) {
			cfg.Federation.TrustedKeyServers = []config.KeyServer{{ServerName: c.Config.ServerName}}
		})
		bob := b.Register(t, "bob", "pw")
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+via, map[string]any{}, nil)
		var create map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.create", nil, &create)
		send(t, bob, room, "hi", "hello via the notary")
		waitFor(t, "carol to get bob's message", func() bool { return slices.Contains(bodies(t, carol, room), "hello via the notary") })
	})
}

// TestPresenceOnJoin: alice (A) and bob (B) set their presence before they share a
// room; once bob joins alice's room each sees the other's, with no change after
// the join to carry it.
func TestPresenceOnJoin(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice, bob := a.Register(t, "alice", "pw"), b.Register(t, "bob", "pw")
		for _, c := range []*testserver.Client{alice, bob} {
			c.MustDo("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(c.UserID)+"/status",
				map[string]any{"presence": "online", "status_msg": "before the room"}, nil)
		}
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(created["room_id"]), map[string]any{}, nil)
		sees := func(viewer, other *testserver.Client) func() bool {
			return func() bool {
				var p map[string]any
				viewer.Do("GET", "/_matrix/client/v3/presence/"+url.PathEscape(other.UserID)+"/status", nil, &p)
				return p["presence"] == "online" && p["status_msg"] == "before the room"
			}
		}
		waitFor(t, "bob to see alice's presence", sees(bob, alice))
		waitFor(t, "alice to see bob's presence", sees(alice, bob))
	})
}

// uploadDeviceKeys gives the client's device self-signed ed25519/curve25519 keys
// and returns the ed25519 key.
func uploadDeviceKeys(t *testing.T, c *testserver.Client) string {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	curve := make([]byte, 32)
	copy(curve, pub)
	edKey := base64.RawStdEncoding.EncodeToString(pub)
	keys := map[string]any{
		"user_id": c.UserID, "device_id": c.Device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + c.Device: edKey, "curve25519:" + c.Device: base64.RawStdEncoding.EncodeToString(curve)},
	}
	raw, _ := json.Marshal(keys)
	signed, err := gomatrixserverlib.SignJSON(c.UserID, gomatrixserverlib.KeyID("ed25519:"+c.Device), priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	c.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": json.RawMessage(signed)}, nil)
	return edKey
}

// queriedKey returns the ed25519 key of user's device as /keys/query on c reports it.
func queriedKey(t *testing.T, c *testserver.Client, user, device string) string {
	t.Helper()
	var out struct {
		DeviceKeys map[string]map[string]struct {
			Keys map[string]string `json:"keys"`
		} `json:"device_keys"`
		Failures map[string]any `json:"failures"`
	}
	c.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{user: {}}}, &out)
	return out.DeviceKeys[user][device].Keys["ed25519:"+device]
}

// TestRemoteDeviceListCache: alice (A) queries bob's (B) keys once; the list is
// kept, so with B down her query still answers with bob's device and no failure.
// When bob adds a device, B's update marks the kept list stale and the next query
// fetches both.
func TestRemoteDeviceListCache(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, _ := joinedPair(t, d)
		bobKey := uploadDeviceKeys(t, bob)
		if got := queriedKey(t, alice, bob.UserID, bob.Device); got != bobKey {
			t.Fatalf("alice's query of bob's key = %q; want %q", got, bobKey)
		}
		b.Stop()
		var out struct {
			DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
			Failures   map[string]any                        `json:"failures"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{bob.UserID: {}}}, &out)
		if out.DeviceKeys[bob.UserID][bob.Device] == nil || len(out.Failures) != 0 {
			t.Fatalf("with B down, alice's query = %s, failures %v; want bob's device from the kept list", out.DeviceKeys, out.Failures)
		}
		b.Resume(t)
		var login struct {
			AccessToken string `json:"access_token"`
			DeviceID    string `json:"device_id"`
		}
		b.Client(t).MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": "bob"}, "password": "pw"}, &login)
		second := b.Client(t)
		second.Token, second.UserID, second.Device = login.AccessToken, bob.UserID, login.DeviceID
		secondKey := uploadDeviceKeys(t, second)
		waitFor(t, "alice to see bob's second device", func() bool {
			return queriedKey(t, alice, bob.UserID, second.Device) == secondKey
		})
		if got := queriedKey(t, alice, bob.UserID, bob.Device); got != bobKey {
			t.Errorf("bob's first device after the update = %q; want %q", got, bobKey)
		}
		_ = a
	})
}

// TestDeviceListUpdateNamesTheDevice: a local device's change reaches the servers
// sharing a room as an m.device_list_update naming the device, with its keys and
// display name (Synapse's form; other servers read the keys from it instead of
// asking), and the other server's users see the new keys.
func TestDeviceListUpdateNamesTheDevice(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, _ := joinedPair(t, d)
		_ = a
		renamed := b.FederationAnswered("/send/", `"device_display_name":"phone"`)
		alice.MustDo("PUT", "/_matrix/client/v3/devices/"+alice.Device, map[string]any{"display_name": "phone"}, nil)
		select {
		case <-renamed:
		case <-time.After(10 * time.Second):
			t.Fatal("B never got an m.device_list_update with alice's device's new display name")
		}
		key := uploadDeviceKeys(t, alice)
		waitFor(t, "bob to see alice's device key", func() bool {
			return queriedKey(t, bob, alice.UserID, alice.Device) == key
		})
	})
}
