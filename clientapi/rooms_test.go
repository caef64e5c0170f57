package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

type event struct {
	Type     string          `json:"type"`
	EventID  string          `json:"event_id"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  map[string]any  `json:"content"`
	Unsigned map[string]any  `json:"unsigned"`
	Raw      json.RawMessage `json:"-"`
}

func createRoom(t *testing.T, c *testserver.Client, body map[string]any) string {
	t.Helper()
	var out map[string]string
	c.MustDo("POST", "/_matrix/client/v3/createRoom", body, &out)
	if !strings.HasPrefix(out["room_id"], "!") {
		t.Fatalf("createRoom = %v; want a room ID", out)
	}
	return out["room_id"]
}

func sendText(t *testing.T, c *testserver.Client, roomID, txn, text string) string {
	t.Helper()
	var out map[string]string
	c.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/"+txn, map[string]string{"msgtype": "m.text", "body": text}, &out)
	return out["event_id"]
}

func messages(t *testing.T, c *testserver.Client, roomID, query string) (chunk []event, end string) {
	t.Helper()
	var out struct {
		Chunk []event `json:"chunk"`
		End   string  `json:"end"`
	}
	c.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?"+query, nil, &out)
	return out.Chunk, out.End
}

func bodies(events []event) []string {
	var out []string
	for _, e := range events {
		if e.Type == "m.room.message" {
			b, _ := e.Content["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

func TestPublicRoomConversation(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		alice.MustDo("PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", map[string]string{"displayname": "Alice"}, nil)

		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Lobby", "topic": "hello", "room_alias_name": "lobby", "visibility": "public"})
		var resolved map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/directory/room/%23lobby:localhost", nil, &resolved)
		if resolved["room_id"] != roomID {
			t.Fatalf("alias resolves to %v; want %s", resolved["room_id"], roomID)
		}
		bob.MustDo("POST", "/_matrix/client/v3/join/%23lobby:localhost", map[string]any{}, nil)

		first := sendText(t, alice, roomID, "t1", "hi bob")
		if again := sendText(t, alice, roomID, "t1", "hi bob"); again != first {
			t.Errorf("resending transaction t1 gave %s; want the first event %s", again, first)
		}
		sendText(t, bob, roomID, "t1", "hi alice") // the same txn ID from another device is a new event
		for i := 0; i < 5; i++ {
			sendText(t, alice, roomID, "n"+string(rune('a'+i)), "msg "+string(rune('a'+i)))
		}

		chunk, end := messages(t, bob, roomID, "dir=b&limit=3")
		if got := bodies(chunk); strings.Join(got, ",") != "msg e,msg d,msg c" {
			t.Fatalf("latest 3 messages = %v; want msg e, msg d, msg c", got)
		}
		rest, _ := messages(t, bob, roomID, "dir=b&limit=100&from="+end)
		if got := bodies(rest); strings.Join(got, ",") != "msg b,msg a,hi alice,hi bob" {
			t.Errorf("older messages = %v", got)
		}
		var creates int
		for _, e := range rest {
			if e.Type == "m.room.create" {
				creates++
			}
		}
		if creates != 1 {
			t.Errorf("paginating to the start found %d create events; want 1", creates)
		}
		fwd, _ := messages(t, bob, roomID, `dir=f&limit=100&filter={"types":["m.room.message"],"senders":["@bob:localhost"]}`)
		if got := bodies(fwd); strings.Join(got, ",") != "hi alice" {
			t.Errorf("filtered forward messages = %v; want bob's one message", got)
		}

		var name map[string]string
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.name", nil, &name)
		if name["name"] != "Lobby" {
			t.Errorf("room name = %v", name)
		}
		var state []event
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/state", nil, &state)
		types := map[string]int{}
		for _, e := range state {
			types[e.Type]++
		}
		for _, want := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility", "m.room.name", "m.room.topic", "m.room.canonical_alias"} {
			if types[want] != 1 {
				t.Errorf("state has %d %s events; want 1", types[want], want)
			}
		}
		if types["m.room.member"] != 2 {
			t.Errorf("state has %d members; want 2", types["m.room.member"])
		}

		var joined struct {
			Joined map[string]struct {
				DisplayName string `json:"display_name"`
			} `json:"joined"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/joined_members", nil, &joined)
		if len(joined.Joined) != 2 || joined.Joined["@alice:localhost"].DisplayName != "Alice" {
			t.Errorf("joined members = %+v; want alice (Alice) and bob", joined.Joined)
		}
		var jr map[string][]string
		bob.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, &jr)
		if len(jr["joined_rooms"]) != 1 || jr["joined_rooms"][0] != roomID {
			t.Errorf("joined rooms = %v", jr)
		}
		var ev event
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+first, nil, &ev)
		if ev.Content["body"] != "hi bob" || ev.Sender != "@alice:localhost" {
			t.Errorf("event %s = %+v", first, ev)
		}

		// Bob leaves: he sees his leave and nothing after it.
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)
		sendText(t, alice, roomID, "after", "after bob left")
		chunk, _ = messages(t, bob, roomID, "dir=b&limit=5")
		if len(chunk) == 0 || chunk[0].Type != "m.room.member" || *chunk[0].StateKey != "@bob:localhost" {
			t.Fatalf("bob's latest visible event = %+v; want his own leave", chunk)
		}
		for _, b := range bodies(chunk) {
			if b == "after bob left" {
				t.Error("bob sees a message sent after he left")
			}
		}
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/forget", map[string]any{}, nil)
		bob.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, &jr)
		if len(jr["joined_rooms"]) != 0 {
			t.Errorf("joined rooms after leave = %v", jr)
		}
	})
}

func TestPrivateRoomMembershipAndPowers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "private_chat",
			"initial_state": []map[string]any{{"type": "m.room.history_visibility", "state_key": "", "content": map[string]string{"history_visibility": "joined"}}}})
		path := "/_matrix/client/v3/rooms/" + roomID

		var e errBody
		if st := bob.Do("POST", path+"/join", map[string]any{}, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
			t.Fatalf("join uninvited = %d %s; want 403 M_FORBIDDEN", st, e.ErrCode)
		}
		secret := sendText(t, alice, roomID, "s", "before bob")
		alice.MustDo("POST", path+"/invite", map[string]string{"user_id": "@bob:localhost"}, nil)
		bob.MustDo("POST", path+"/join", map[string]any{}, nil)
		sendText(t, alice, roomID, "w", "welcome bob")
		chunk, _ := messages(t, bob, roomID, "dir=b&limit=50")
		if got := bodies(chunk); strings.Join(got, ",") != "welcome bob" {
			t.Errorf("bob sees %v; want only what was sent after he joined (history: joined)", got)
		}
		if st := bob.Do("GET", path+"/event/"+secret, nil, &e); st != 404 {
			t.Errorf("bob fetching an event from before his join = %d; want 404", st)
		}

		// Bob (power 0) may not kick, ban, redact others or change the name.
		if st := bob.Do("POST", path+"/kick", map[string]string{"user_id": "@alice:localhost"}, &e); st != 403 {
			t.Errorf("bob kicks alice = %d; want 403", st)
		}
		if st := bob.Do("PUT", path+"/state/m.room.name", map[string]string{"name": "x"}, &e); st != 403 {
			t.Errorf("bob renames = %d; want 403", st)
		}
		if st := bob.Do("PUT", path+"/redact/"+secret+"/r1", map[string]any{}, &e); st != 404 && st != 403 {
			t.Errorf("bob redacts alice's hidden event = %d; want 403/404", st)
		}

		// Alice redacts her own message; Bob sees it stripped.
		welcome := chunk[0].EventID
		alice.MustDo("PUT", path+"/redact/"+welcome+"/r1", map[string]string{"reason": "oops"}, nil)
		var ev event
		bob.MustDo("GET", path+"/event/"+welcome, nil, &ev)
		if len(ev.Content) != 0 || ev.Unsigned["redacted_because"] == nil {
			t.Errorf("redacted event = %+v; want empty content and redacted_because", ev)
		}

		// Kick, ban, unban.
		alice.MustDo("POST", path+"/kick", map[string]string{"user_id": "@bob:localhost", "reason": "bye"}, nil)
		var members struct{ Chunk []event }
		alice.MustDo("GET", path+"/members?membership=leave", nil, &members)
		if len(members.Chunk) != 1 || members.Chunk[0].Content["reason"] != "bye" {
			t.Errorf("left members = %+v; want bob with reason", members.Chunk)
		}
		alice.MustDo("POST", path+"/ban", map[string]string{"user_id": "@carol:localhost"}, nil)
		if st := alice.Do("POST", path+"/invite", map[string]string{"user_id": "@carol:localhost"}, &e); st != 403 {
			t.Errorf("inviting a banned user = %d; want 403", st)
		}
		alice.MustDo("POST", path+"/unban", map[string]string{"user_id": "@carol:localhost"}, nil)
		if st := alice.Do("POST", path+"/unban", map[string]string{"user_id": "@carol:localhost"}, &e); st != 403 {
			t.Errorf("unbanning a user who is not banned = %d; want 403", st)
		}
		alice.MustDo("POST", path+"/invite", map[string]string{"user_id": "@carol:localhost"}, nil)
		carol.MustDo("POST", path+"/join", map[string]any{}, nil)
		var atJoin struct{ Chunk []event }
		carol.MustDo("GET", path+"/members?membership=join", nil, &atJoin)
		if len(atJoin.Chunk) != 2 {
			t.Errorf("joined members = %d; want alice and carol", len(atJoin.Chunk))
		}
	})
}

func TestRoomBadInput(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		stranger := srv.Register(t, "stranger", "pw")
		roomID := createRoom(t, alice, map[string]any{"room_alias_name": "taken"})
		path := "/_matrix/client/v3/rooms/" + roomID
		big := strings.Repeat("x", rooms.MaxEventBytes)
		cases := []struct {
			name       string
			client     *testserver.Client
			method     string
			path       string
			body       any
			wantStatus int
			wantCode   string
		}{
			{"unknown room version", alice, "POST", "/_matrix/client/v3/createRoom", `{"room_version":"99"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{"bad preset", alice, "POST", "/_matrix/client/v3/createRoom", `{"preset":"party"}`, 400, "M_INVALID_PARAM"},
			{"alias in use", alice, "POST", "/_matrix/client/v3/createRoom", `{"room_alias_name":"taken"}`, 400, "M_ROOM_IN_USE"},
			{"bad invitee", alice, "POST", "/_matrix/client/v3/createRoom", `{"invite":["bob"]}`, 400, "M_INVALID_PARAM"},
			{"create wrong type", alice, "POST", "/_matrix/client/v3/createRoom", `{"name":5}`, 400, "M_BAD_JSON"},
			{"event too large", alice, "PUT", path + "/send/m.room.message/big", `{"body":"` + big + `"}`, 413, "M_TOO_LARGE"},
			{"content not object", alice, "PUT", path + "/send/m.room.message/arr", `[1]`, 400, "M_BAD_JSON"},
			{"content not JSON", alice, "PUT", path + "/send/m.room.message/nj", `{`, 400, "M_NOT_JSON"},
			{"stranger sends", stranger, "PUT", path + "/send/m.room.message/x", `{"body":"x"}`, 403, "M_FORBIDDEN"},
			{"stranger reads", stranger, "GET", path + "/messages?dir=b", nil, 403, "M_FORBIDDEN"},
			{"stranger reads state", stranger, "GET", path + "/state", nil, 403, "M_FORBIDDEN"},
			{"unknown room", alice, "PUT", "/_matrix/client/v3/rooms/!nope:localhost/send/m.room.message/x", `{}`, 404, "M_NOT_FOUND"},
			{"invalid room ID", alice, "GET", "/_matrix/client/v3/rooms/nope/state", nil, 400, "M_INVALID_PARAM"},
			{"bad dir", alice, "GET", path + "/messages?dir=sideways", nil, 400, "M_INVALID_PARAM"},
			{"bad token", alice, "GET", path + "/messages?dir=b&from=garbage", nil, 400, "M_INVALID_PARAM"},
			{"bad limit", alice, "GET", path + "/messages?dir=b&limit=-1", nil, 400, "M_INVALID_PARAM"},
			{"bad filter", alice, "GET", path + "/messages?dir=b&filter=%7B", nil, 400, "M_NOT_JSON"},
			{"missing state", alice, "GET", path + "/state/m.room.topic", nil, 404, "M_NOT_FOUND"},
			{"unknown event", alice, "GET", path + "/event/$nope", nil, 404, "M_NOT_FOUND"},
			{"unknown alias", alice, "GET", "/_matrix/client/v3/directory/room/%23nope:localhost", nil, 404, "M_NOT_FOUND"},
			{"join unknown alias", alice, "POST", "/_matrix/client/v3/join/%23nope:localhost", `{}`, 404, "M_NOT_FOUND"},
			{"invite without user", alice, "POST", path + "/invite", `{}`, 400, "M_MISSING_PARAM"},
			{"second create event", alice, "PUT", path + "/state/m.room.create", `{}`, 403, "M_FORBIDDEN"},
			{"forget while joined", alice, "POST", path + "/forget", `{}`, 400, "M_UNKNOWN"},
		}
		for _, tc := range cases {
			var got errBody
			st, data := tc.client.Raw(tc.method, tc.path, tc.body)
			json.Unmarshal(data, &got)
			if st != tc.wantStatus || got.ErrCode != tc.wantCode {
				t.Errorf("%s: %s %s = %d %s (%s); want %d %s", tc.name, tc.method, tc.path, st, got.ErrCode, got.Error, tc.wantStatus, tc.wantCode)
			}
		}
		sendText(t, alice, roomID, "still", "still works")
	})
}

func TestCommittedEventsAreAnnouncedOnTheBus(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		notices := make(chan rooms.Notice, 64)
		sub, err := srv.Bus.Conn.Subscribe(rooms.NoticeSubject, func(m *nats.Msg) {
			var n rooms.Notice
			json.Unmarshal(m.Data, &n)
			notices <- n
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		alice := srv.Register(t, "alice", "pw")
		roomID := createRoom(t, alice, map[string]any{})
		eventID := sendText(t, alice, roomID, "1", "hello")
		deadline := time.After(10 * time.Second)
		var last int64
		for {
			select {
			case n := <-notices:
				if n.StreamPos <= last {
					t.Errorf("notice positions out of order: %d after %d", n.StreamPos, last)
				}
				last = n.StreamPos
				if n.EventID == eventID {
					if n.RoomID != roomID || n.Type != "m.room.message" {
						t.Errorf("notice = %+v", n)
					}
					return
				}
			case <-deadline:
				t.Fatal("no notice for the sent event within 10s")
			}
		}
	})
}

// TestConcurrentSendersKeepOneLinearHistory sends from many goroutines into one room
// and checks that every acknowledged event is stored once, in a single chain.
func TestConcurrentSendersKeepOneLinearHistory(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		const senders, each = 6, 10
		clients := make([]*testserver.Client, senders)
		for i := range clients {
			clients[i] = srv.Register(t, fmt.Sprintf("u%d", i), "pw")
			clients[i].MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		}
		var wg sync.WaitGroup
		ids := make(chan string, senders*each)
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < each; j++ {
					var out map[string]string
					if st := c.Do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%d-%d", roomID, i, j),
						map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("%d-%d", i, j)}, &out); st != 200 {
						t.Errorf("send = %d", st)
						return
					}
					ids <- out["event_id"]
				}
			}()
		}
		wg.Wait()
		close(ids)
		acked := map[string]bool{}
		for id := range ids {
			acked[id] = true
		}
		chunk, _ := messages(t, alice, roomID, `dir=b&limit=1000&filter={"types":["m.room.message"]}`)
		if len(chunk) != senders*each || len(acked) != senders*each {
			t.Fatalf("stored %d messages, acknowledged %d; want %d of each", len(chunk), len(acked), senders*each)
		}
		for _, e := range chunk {
			if !acked[e.EventID] {
				t.Errorf("stored event %s was never acknowledged", e.EventID)
			}
		}
		var extremities int
		if err := srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM forward_extremities WHERE room_id = $1`, roomID).Scan(&extremities); err != nil || extremities != 1 {
			t.Errorf("forward extremities = %d, %v; want 1 (no fork)", extremities, err)
		}
	})
}

func TestProfileChangesReachMemberEvents(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", map[string]string{"displayname": "Queen Alice"}, nil)
		var member map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.member/@alice:localhost", nil, &member)
		if member["displayname"] != "Queen Alice" || member["membership"] != "join" {
			t.Errorf("alice's member event = %v; want join with the new displayname", member)
		}
	})
}

func TestRoomUpgrade(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		old := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Old", "topic": "t", "room_alias_name": "up", "room_version": "9"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+old, map[string]any{}, nil)
		var e errBody
		if st := bob.Do("POST", "/_matrix/client/v3/rooms/"+old+"/upgrade", map[string]string{"new_version": "10"}, &e); st != 403 {
			t.Errorf("upgrade by a non-moderator = %d; want 403", st)
		}
		if st := alice.Do("POST", "/_matrix/client/v3/rooms/"+old+"/upgrade", map[string]string{"new_version": "99"}, &e); st != 400 || e.ErrCode != "M_UNSUPPORTED_ROOM_VERSION" {
			t.Errorf("upgrade to 99 = %d %s", st, e.ErrCode)
		}
		var out map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+old+"/upgrade", map[string]string{"new_version": "11"}, &out)
		newID := out["replacement_room"]
		var tomb map[string]string
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+old+"/state/m.room.tombstone", nil, &tomb)
		if tomb["replacement_room"] != newID {
			t.Errorf("tombstone = %v; want replacement %s", tomb, newID)
		}
		var create map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+newID+"/state/m.room.create", nil, &create)
		if create["room_version"] != "11" || create["predecessor"].(map[string]any)["room_id"] != old {
			t.Errorf("new create = %v", create)
		}
		var name map[string]string
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+newID+"/state/m.room.name", nil, &name)
		if name["name"] != "Old" {
			t.Errorf("copied name = %v", name)
		}
		var alias map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/directory/room/%23up:localhost", nil, &alias)
		if alias["room_id"] != newID {
			t.Errorf("alias points to %v; want the new room", alias["room_id"])
		}
		// Bob follows into the public new room; in the old one he may no longer speak.
		bob.MustDo("POST", "/_matrix/client/v3/join/"+newID, map[string]any{}, nil)
		if st := bob.Do("PUT", "/_matrix/client/v3/rooms/"+old+"/send/m.room.message/x", map[string]string{"body": "x"}, &e); st != 403 {
			t.Errorf("bob speaking in the old room = %d; want 403", st)
		}
	})
}

func TestKnockingAndRestrictedJoins(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")

		knockRoom := createRoom(t, alice, map[string]any{"room_version": "10",
			"initial_state": []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]string{"join_rule": "knock"}}}})
		var e errBody
		if st := bob.Do("POST", "/_matrix/client/v3/join/"+knockRoom, map[string]any{}, &e); st != 403 {
			t.Errorf("joining a knock room uninvited = %d; want 403", st)
		}
		bob.MustDo("POST", "/_matrix/client/v3/knock/"+knockRoom, map[string]string{"reason": "let me in"}, nil)
		var s struct {
			Rooms struct {
				Knock map[string]any `json:"knock"`
			} `json:"rooms"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
		if _, ok := s.Rooms.Knock[knockRoom]; !ok {
			t.Errorf("bob's sync lacks the knock: %+v", s.Rooms.Knock)
		}
		var members struct{ Chunk []event }
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+knockRoom+"/members?membership=knock", nil, &members)
		if len(members.Chunk) != 1 || members.Chunk[0].Content["reason"] != "let me in" {
			t.Fatalf("knocking members = %+v", members.Chunk)
		}
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+knockRoom+"/invite", map[string]string{"user_id": "@bob:localhost"}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+knockRoom, map[string]any{}, nil)
		if st := carol.Do("POST", "/_matrix/client/v3/knock/"+createRoom(t, alice, map[string]any{}), map[string]any{}, &e); st != 403 {
			t.Errorf("knocking on an invite-only room = %d; want 403", st)
		}

		parent := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+parent, map[string]any{}, nil)
		restricted := createRoom(t, alice, map[string]any{"room_version": "10",
			"initial_state": []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
				"join_rule": "restricted", "allow": []map[string]string{{"type": "m.room_membership", "room_id": parent}}}}}})
		if st := carol.Do("POST", "/_matrix/client/v3/join/"+restricted, map[string]any{}, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
			t.Errorf("carol (not in the parent) joining the restricted room = %d %s; want 403", st, e.ErrCode)
		}
		bob.MustDo("POST", "/_matrix/client/v3/join/"+restricted, map[string]any{}, nil)
		var m map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+restricted+"/state/m.room.member/@bob:localhost", nil, &m)
		if m["membership"] != "join" || m["join_authorised_via_users_server"] != "@alice:localhost" {
			t.Errorf("bob's restricted join = %v; want join vouched for by alice", m)
		}
	})
}

// TestRoomVersion12 covers what v12 changes (MSC4291, MSC4289): the room ID is the
// create event's hash, creators outrank every power level and are never listed in
// them, and the trusted preset makes invitees creators.
func TestRoomVersion12(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat",
			"invite": []string{"@bob:localhost"}, "name": "Twelve"})
		if strings.Contains(room, ":") {
			t.Fatalf("v12 room ID %q has a server name", room)
		}
		var state []map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/state", nil, &state)
		var create, pl map[string]any
		for _, ev := range state {
			switch ev["type"] {
			case "m.room.create":
				create = ev
			case "m.room.power_levels":
				pl = ev["content"].(map[string]any)
			}
		}
		if create == nil || "!"+create["event_id"].(string)[1:] != room || create["room_id"] != room {
			t.Fatalf("create event %v does not name room %s", create, room)
		}
		if c := create["content"].(map[string]any); c["room_version"] != "12" || fmt.Sprint(c["additional_creators"]) != "[@bob:localhost]" {
			t.Errorf("create content = %v; want version 12 and bob as additional creator", c)
		}
		if users := pl["users"].(map[string]any); len(users) != 0 {
			t.Errorf("power level users = %v; creators are not listed", users)
		}

		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/invite", map[string]string{"user_id": "@carol:localhost"}, nil)
		carol.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		ev := sendText(t, carol, room, "t1", "hello twelve")
		var msgs struct {
			Chunk []map[string]any `json:"chunk"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=5", nil, &msgs)
		if len(msgs.Chunk) == 0 || msgs.Chunk[0]["event_id"] != ev {
			t.Errorf("messages = %v; want carol's message first", msgs.Chunk)
		}

		var e errBody
		cases := []struct {
			name   string
			c      *testserver.Client
			method string
			path   string
			body   any
			status int
		}{
			// bob is a creator: above every level, so he may change power levels...
			{"additional creator changes power levels", bob, "PUT", "/state/m.room.power_levels/", map[string]any{"users": map[string]int{"@carol:localhost": 50}}, 200},
			// ...but listing a creator in them is refused.
			{"power levels naming a creator", alice, "PUT", "/state/m.room.power_levels/", map[string]any{"users": map[string]int{"@alice:localhost": 100}}, 403},
			{"carol renames at 50", carol, "PUT", "/state/m.room.name/", map[string]string{"name": "x"}, 200},
			{"carol kicks a creator", carol, "POST", "/kick", map[string]string{"user_id": "@bob:localhost"}, 403},
			{"creators are equals: bob bans alice", bob, "POST", "/ban", map[string]string{"user_id": "@alice:localhost"}, 403},
			{"a creator kicks carol", alice, "POST", "/kick", map[string]string{"user_id": "@carol:localhost"}, 200},
		}
		for _, c := range cases {
			if st := c.c.Do(c.method, "/_matrix/client/v3/rooms/"+room+c.path, c.body, &e); st != c.status {
				t.Errorf("%s = %d %s; want %d", c.name, st, e.ErrCode, c.status)
			}
		}
		if st := alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "12",
			"power_level_content_override": map[string]any{"users": map[string]int{"@alice:localhost": 100}}}, &e); st < 400 || st >= 500 {
			t.Errorf("creating a v12 room that lists its creator in power levels = %d; want a 4xx", st)
		}

		// Upgrading into v12: the upgrader is the new room's creator; the old power
		// levels carry over without the upgrader.
		old := createRoom(t, alice, map[string]any{"room_version": "11", "preset": "public_chat",
			"power_level_content_override": map[string]any{"users": map[string]int{"@alice:localhost": 100, "@bob:localhost": 50}}})
		var out map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+old+"/upgrade", map[string]string{"new_version": "12"}, &out)
		next := out["replacement_room"]
		if strings.Contains(next, ":") || !strings.HasPrefix(next, "!") {
			t.Fatalf("upgraded room ID = %q", next)
		}
		var newPL map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+next+"/state/m.room.power_levels", nil, &newPL)
		if users := newPL["users"].(map[string]any); users["@alice:localhost"] != nil || users["@bob:localhost"] != float64(50) {
			t.Errorf("upgraded power levels users = %v; want bob at 50 and no alice", users)
		}
		sendText(t, alice, next, "t2", "moved in")
		// The upgrader outranks the old levels in the new room: upgrading again works.
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+next+"/upgrade", map[string]string{"new_version": "12"}, &out)
	})
}
