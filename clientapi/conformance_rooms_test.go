package clientapi_test

import (
	"net/http"
	"strings"
	"testing"

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
