package clientapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestRepeatedStateIsANoOp: setting state that is already there (same type, key,
// sender and content) and joining a room one is joined to answer with the event
// already there instead of adding a copy; a change of content or sender is a new
// event.
func TestRepeatedStateIsANoOp(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.power_levels", map[string]any{
			"users": map[string]int{alice.UserID: 100, bob.UserID: 100}}, nil)

		put := func(c *testserver.Client, content map[string]any) string {
			t.Helper()
			var out map[string]string
			c.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.topic", content, &out)
			return out["event_id"]
		}
		first := put(alice, map[string]any{"topic": "same"})
		if again := put(alice, map[string]any{"topic": "same"}); again != first {
			t.Errorf("same state set twice = %s, %s; want the first event back", first, again)
		}
		changed := put(alice, map[string]any{"topic": "other"})
		if changed == first {
			t.Errorf("changed topic = %s; want a new event", changed)
		}
		if byBob := put(bob, map[string]any{"topic": "other"}); byBob == changed {
			t.Errorf("same topic by another sender = %s; want a new event", byBob)
		}

		memberID := func() string {
			var ev struct {
				EventID string `json:"event_id"`
			}
			bob.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.member/"+bob.UserID+"?format=event", nil, &ev)
			return ev.EventID
		}
		before := memberID()
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		if after := memberID(); after != before {
			t.Errorf("member event after joining twice = %s; want %s (no new event)", after, before)
		}
	})
}

// TestHistoryVisibilityBoundaries: an m.room.history_visibility change is shown to
// whoever the visibility before or after it lets see it, so a late joiner sees where
// history opens to them and nothing of what was hidden from them.
func TestHistoryVisibilityBoundaries(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"}) // shared
		for i, hv := range []string{"joined", "invited", "shared"} {
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.history_visibility", map[string]string{"history_visibility": hv}, nil)
			sendText(t, alice, room, "t"+hv, string(rune('1'+i)))
		}
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		chunk, _ := messages(t, bob, room, "dir=b&limit=50")
		var seen []string
		for i := len(chunk) - 1; i >= 0; i-- {
			switch ev := chunk[i]; ev.Type {
			case "m.room.history_visibility":
				seen = append(seen, "hv:"+ev.Content["history_visibility"].(string))
			case "m.room.message":
				seen = append(seen, "msg:"+ev.Content["body"].(string))
			}
		}
		// The first (shared) is the preset's; "joined" opened under shared;
		// "invited" and messages 1 and 2 were hidden; "shared" opens history again.
		if got, want := strings.Join(seen, " "), "hv:shared hv:joined hv:shared msg:3"; got != want {
			t.Errorf("late joiner sees %q; want %q", got, want)
		}
	})
}

// TestJoinContentAndProfileAnswers: a /join body's keys go into the member event (a
// per-room displayname), except those only the server sets; joined_members always
// carries display_name and avatar_url (null when unset); an unset profile field of
// an existing user answers 200 with no value, an unknown user 404.
func TestJoinContentAndProfileAnswers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_alias_name": "lobby"})
		bob.MustDo("POST", "/_matrix/client/v3/join/%23lobby:localhost", map[string]any{
			"foo": "bar", "displayname": "Bobby here", "membership": "leave", "reason": "hi"}, nil)
		var member map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.member/"+bob.UserID, nil, &member)
		if member["foo"] != "bar" || member["displayname"] != "Bobby here" || member["membership"] != "join" || member["reason"] != "hi" {
			t.Errorf("member event after a join with content = %v; want foo, the per-room name, the reason, membership join", member)
		}

		raw := func(path string) string {
			t.Helper()
			st, body := bob.Raw(http.MethodGet, path, nil)
			if st != 200 {
				t.Fatalf("GET %s = %d %s", path, st, body)
			}
			return string(body)
		}
		if got := raw("/_matrix/client/v3/rooms/" + room + "/joined_members"); !strings.Contains(got, `"avatar_url":null`) {
			t.Errorf("joined_members = %s; want avatar_url present as null", got)
		}
		if got := raw("/_matrix/client/v3/profile/" + bob.UserID + "/avatar_url"); got != "{}" {
			t.Errorf("unset avatar_url = %s; want {}", got)
		}
		if st := bob.Do("GET", "/_matrix/client/v3/profile/@nobody:localhost/avatar_url", nil, nil); st != 404 {
			t.Errorf("avatar_url of an unknown user = %d; want 404", st)
		}
	})
}

// TestLegacySendAndBadBodies: POST /send/{type} (r0, no transaction ID) sends a new
// event each time; a body that is not UTF-8 is M_NOT_JSON.
func TestLegacySendAndBadBodies(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{})
		var a, b map[string]string
		msg := map[string]string{"msgtype": "m.text", "body": "legacy"}
		alice.MustDo("POST", "/_matrix/client/r0/rooms/"+room+"/send/m.room.message", msg, &a)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message", msg, &b)
		if a["event_id"] == "" || a["event_id"] == b["event_id"] {
			t.Errorf("two legacy sends = %v, %v; want two events", a, b)
		}
		var e errBody
		for _, path := range []string{"/_matrix/client/v3/register", "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/t1"} {
			method := "POST"
			if strings.Contains(path, "/send/") {
				method = "PUT"
			}
			if st := alice.Do(method, path, []byte("{\"username\": \"a\x81\", \"body\": \"b\x81\"}"), &e); st != 400 || e.ErrCode != "M_NOT_JSON" {
				t.Errorf("%s %s with invalid UTF-8 = %d %s; want 400 M_NOT_JSON", method, path, st, e.ErrCode)
			}
		}
	})
}

// TestUpgradeNamesItsTombstone: the new room's create event names the old room's
// tombstone as predecessor.event_id; an unknown room cannot be upgraded (404).
func TestUpgradeNamesItsTombstone(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		for _, version := range []string{"10", "11"} {
			old := createRoom(t, alice, map[string]any{"room_version": "9"})
			var out map[string]string
			alice.MustDo("POST", "/_matrix/client/v3/rooms/"+old+"/upgrade", map[string]string{"new_version": version}, &out)
			var tomb, create struct {
				EventID string         `json:"event_id"`
				Content map[string]any `json:"content"`
			}
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+old+"/state/m.room.tombstone?format=event", nil, &tomb)
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+out["replacement_room"]+"/state/m.room.create?format=event", nil, &create)
			pred, _ := create.Content["predecessor"].(map[string]any)
			if pred["event_id"] != tomb.EventID || pred["room_id"] != old || tomb.Content["replacement_room"] != out["replacement_room"] {
				t.Errorf("upgrade 9→%s: predecessor %v, tombstone %s %v; want the predecessor to name the tombstone", version, pred, tomb.EventID, tomb.Content)
			}
		}
		// A public_chat room has no m.room.guest_access (guests are forbidden); its
		// replacement says so explicitly, as Synapse's upgrade does.
		public := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		var up map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+public+"/upgrade", map[string]string{"new_version": "10"}, &up)
		var ga map[string]string
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+up["replacement_room"]+"/state/m.room.guest_access", nil, &ga)
		if ga["guest_access"] != "forbidden" {
			t.Errorf("upgraded public room's guest access = %v; want forbidden", ga)
		}
		var e errBody
		if st := alice.Do("POST", "/_matrix/client/v3/rooms/!fail:unknown/upgrade", map[string]string{"new_version": "10"}, &e); st != 404 || e.ErrCode != "M_NOT_FOUND" {
			t.Errorf("upgrade an unknown room = %d %s; want 404 M_NOT_FOUND", st, e.ErrCode)
		}
	})
}

// TestTypingStopReachesEveryone: after a typer stops, even a client whose first
// (initial) sync comes later learns that nobody is typing.
func TestTypingStopReachesEveryone(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		since := doSync(t, bob, "").NextBatch
		typing := "/_matrix/client/v3/rooms/" + room + "/typing/" + alice.UserID
		alice.MustDo("PUT", typing, map[string]any{"typing": true, "timeout": 30000}, nil)
		_, since = waitEphemeral(t, bob, room, since, "m.typing")
		alice.MustDo("PUT", typing, map[string]any{"typing": false}, nil)
		if content, _ := waitEphemeral(t, bob, room, since, "m.typing"); string(content) != `{"user_ids":[]}` {
			t.Fatalf("typing after the stop = %s; want nobody", content)
		}
		var s ephemeralSync
		bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
		var got []string
		for _, e := range s.Rooms.Join[room].Ephemeral.Events {
			if e.Type == "m.typing" {
				got = append(got, string(e.Content))
			}
		}
		if len(got) != 1 || got[0] != `{"user_ids":[]}` {
			t.Errorf("initial sync's typing = %v; want one m.typing with nobody", got)
		}
	})
}

// TestAliasDeletionAndWrongRoomRedaction: deleting the room's canonical alias takes
// it out of m.room.canonical_alias; redacting an event of another room is a bad
// request (400), an unknown event 404.
func TestAliasDeletionAndWrongRoomRedaction(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{})
		alice.MustDo("PUT", "/_matrix/client/v3/directory/room/%23main:localhost", map[string]string{"room_id": room}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/directory/room/%23alt:localhost", map[string]string{"room_id": room}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.canonical_alias", map[string]any{
			"alias": "#main:localhost", "alt_aliases": []string{"#alt:localhost"}}, nil)
		alice.MustDo("DELETE", "/_matrix/client/v3/directory/room/%23main:localhost", nil, nil)
		alice.MustDo("DELETE", "/_matrix/client/v3/directory/room/%23alt:localhost", nil, nil)
		st, body := alice.Raw("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.canonical_alias", nil)
		if st != 200 || string(body) != `{"alt_aliases":[]}` {
			t.Errorf("canonical alias after deleting its aliases = %d %s; want {\"alt_aliases\":[]}", st, body)
		}

		other := createRoom(t, alice, map[string]any{})
		msg := sendText(t, alice, other, "m1", "elsewhere")
		var e errBody
		if st := alice.Do("PUT", "/_matrix/client/v3/rooms/"+room+"/redact/"+msg+"/r1", map[string]any{}, &e); st != 400 {
			t.Errorf("redact another room's event = %d %s; want 400", st, e.ErrCode)
		}
		if st := alice.Do("PUT", "/_matrix/client/v3/rooms/"+room+"/redact/$nope/r2", map[string]any{}, &e); st != 404 {
			t.Errorf("redact an unknown event = %d %s; want 404", st, e.ErrCode)
		}
	})
}

// TestErasedUsersEventsArePrunedForLaterJoiners: after its sender deactivates with
// erase, a message stays whole for those who were joined when it was sent and is
// pruned for those who joined later, in /messages, /event and sync.
func TestErasedUsersEventsArePrunedForLaterJoiners(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw-a")
		member := srv.Register(t, "member", "pw")
		joiner := srv.Register(t, "joiner", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		member.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		msg := sendText(t, alice, room, "m1", "body1")
		joiner.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		body := func(c *testserver.Client) []string {
			t.Helper()
			var ev event
			c.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/event/"+msg, nil, &ev)
			chunk, _ := messages(t, c, room, "dir=b&limit=50")
			s := doSync(t, c, "")
			var inSync []event
			for _, e := range s.Rooms.Join[room].Timeline.Events {
				if e.EventID == msg {
					inSync = append(inSync, e)
				}
			}
			out := []string{fmt.Sprint(ev.Content["body"])}
			for _, e := range append(chunk, inSync...) {
				if e.EventID == msg {
					out = append(out, fmt.Sprint(e.Content["body"]))
				}
			}
			return out
		}
		if got := body(joiner); strings.Join(got, ",") != "body1,body1,body1" {
			t.Fatalf("joiner before the erasure sees %v; want the body everywhere", got)
		}
		alice.MustDo("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"erase": true, "auth": map[string]any{
			"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "pw-a"}}, nil)
		if got := body(member); strings.Join(got, ",") != "body1,body1,body1" {
			t.Errorf("original member after the erasure sees %v; want the body everywhere", got)
		}
		if got := body(joiner); strings.Join(got, ",") != "<nil>,<nil>,<nil>" {
			t.Errorf("later joiner after the erasure sees %v; want it pruned everywhere", got)
		}
	})
}

// TestUpgradeCarriesPowersBansAndDirect: an upgrade keeps an upgrader's level above
// 100, carries bans over, and moves the upgrader's tags and m.direct entry to the
// new room.
func TestUpgradeCarriesPowersBansAndDirect(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		old := createRoom(t, alice, map[string]any{"power_level_content_override": map[string]any{"users": map[string]int{alice.UserID: 500}}})
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+old+"/ban", map[string]string{"user_id": "@bob:matrix.org", "reason": "spam"}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/user/"+alice.UserID+"/account_data/m.direct", map[string]any{"@carol:localhost": []string{old}}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/"+old+"/tags/u.work", map[string]any{"order": 0.5}, nil)

		var out map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+old+"/upgrade", map[string]string{"new_version": "10"}, &out)
		room := out["replacement_room"]
		var pl struct {
			Users map[string]int `json:"users"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.power_levels", nil, &pl)
		if len(pl.Users) != 1 || pl.Users[alice.UserID] != 500 {
			t.Errorf("new room's users = %v; want alice at 500", pl.Users)
		}
		if m := membershipOf(t, alice, room, "@bob:matrix.org"); m != "ban" {
			t.Errorf("banned user in the new room = %q; want ban", m)
		}
		var direct map[string][]string
		alice.MustDo("GET", "/_matrix/client/v3/user/"+alice.UserID+"/account_data/m.direct", nil, &direct)
		if got := direct["@carol:localhost"]; len(got) != 2 || got[1] != room {
			t.Errorf("m.direct after upgrade = %v; want the new room added", direct)
		}
		var tags struct {
			Tags map[string]any `json:"tags"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/user/"+alice.UserID+"/rooms/"+room+"/tags", nil, &tags)
		if _, ok := tags.Tags["u.work"]; !ok {
			t.Errorf("new room's tags = %v; want u.work", tags.Tags)
		}
	})
}

// TestSelfDestructingMessages: a message whose org.matrix.self_destruct_after time
// has passed (MSC2228) is shown pruned; one whose time is still ahead is shown whole.
func TestSelfDestructingMessages(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{})
		now := time.Now().UnixMilli()
		send := func(txn string, at int64) string {
			var out map[string]string
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+txn, map[string]any{
				"msgtype": "m.text", "body": txn, "org.matrix.self_destruct_after": at}, &out)
			return out["event_id"]
		}
		gone, kept := send("gone", now-1), send("kept", now+3_600_000)
		for id, want := range map[string]string{gone: "<nil>", kept: "kept"} {
			var ev event
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/event/"+id, nil, &ev)
			chunk, _ := messages(t, alice, room, "dir=b&limit=10")
			got := []string{fmt.Sprint(ev.Content["body"])}
			for _, e := range chunk {
				if e.EventID == id {
					got = append(got, fmt.Sprint(e.Content["body"]))
				}
			}
			if strings.Join(got, ",") != want+","+want {
				t.Errorf("message %s in /event and /messages = %v; want %s twice", id, got, want)
			}
		}
	})
}
