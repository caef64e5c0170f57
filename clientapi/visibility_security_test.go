package clientapi_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

const (
	secretBody = "sent before bob joined"
	openBody   = "sent after bob joined"
)

// lateJoinerRoom has alice create a public room with history visibility "joined",
// say secretBody, let bob join and say openBody. It returns the room and the two
// messages' event IDs.
func lateJoinerRoom(t *testing.T, alice, bob *testserver.Client) (room, secret, open string) {
	t.Helper()
	room = createRoom(t, alice, map[string]any{"preset": "public_chat", "initial_state": []map[string]any{{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]string{"history_visibility": "joined"}}}})
	secret = sendText(t, alice, room, "s1", secretBody)
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	open = sendText(t, alice, room, "s2", openBody)
	return room, secret, open
}

// TestLateJoinerCannotReadHistory: in a room whose history is visible to joined
// members only, a message sent before bob joined is hidden from him on every read
// of the client API, and the message sent after is not (the control that each
// read works at all).
func TestLateJoinerCannotReadHistory(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room, secret, open := lateJoinerRoom(t, alice, bob)
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(room)

		eventBodies := func(id string) []string {
			var ev event
			if code := bob.Do("GET", path+"/event/"+url.PathEscape(id), nil, &ev); code != 200 {
				return nil
			}
			return bodies([]event{ev})
		}
		for _, tc := range []struct {
			read string
			// bodies returns the message bodies bob gets.
			bodies func() []string
		}{
			{"/messages", func() []string {
				chunk, _ := messages(t, bob, url.PathEscape(room), "dir=b&limit=50")
				return bodies(chunk)
			}},
			{"/context of the later message", func() []string {
				var c struct {
					Before []event `json:"events_before"`
					Event  event   `json:"event"`
					After  []event `json:"events_after"`
				}
				bob.MustDo("GET", path+"/context/"+url.PathEscape(open)+"?limit=20", nil, &c)
				return bodies(append(append(c.Before, c.Event), c.After...))
			}},
			{"/event", func() []string { return append(eventBodies(secret), eventBodies(open)...) }},
			{"/timestamp_to_event", func() []string {
				var out []string
				for _, dir := range []string{"b", "f"} {
					var got struct {
						EventID string `json:"event_id"`
					}
					ts := time.Now().Add(time.Minute).UnixMilli()
					if dir == "f" {
						ts = 0
					}
					if bob.Do("GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?ts=%d&dir=%s", url.PathEscape(room), ts, dir), nil, &got) == 200 {
						out = append(out, eventBodies(got.EventID)...)
						if got.EventID == secret {
							out = append(out, secretBody)
						}
					}
				}
				return out
			}},
			{"/sync (initial)", func() []string {
				s := doSync(t, bob, "filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`))
				return bodies(s.Rooms.Join[room].Timeline.Events)
			}},
			{"sliding sync", func() []string {
				res := sliding(t, bob, "", map[string]any{"lists": map[string]any{"all": map[string]any{
					"ranges": [][]int{{0, 10}}, "timeline_limit": 50, "required_state": [][]string{}}}})
				return bodies(res.Rooms[room].Timeline)
			}},
		} {
			got := tc.bodies()
			if slices.Contains(got, secretBody) {
				t.Errorf("%s for bob = %q; want nothing sent before he joined", tc.read, got)
			}
			if !slices.Contains(got, openBody) {
				t.Errorf("%s for bob = %q; want the message sent after he joined", tc.read, got)
			}
		}
		// Asked for by ID, the hidden message is as unknown as a missing one.
		for _, read := range []string{"/event/", "/context/"} {
			if code := bob.Do("GET", path+read+url.PathEscape(secret), nil, nil); code != 404 {
				t.Errorf("GET %s of the earlier message = %d; want 404", read, code)
			}
		}
	})
}
