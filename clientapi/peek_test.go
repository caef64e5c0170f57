package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// peekSync is the part of a /sync response the peeking tests read.
type peekSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]any `json:"join"`
		Peek map[string]struct {
			State    struct{ Events []event } `json:"state"`
			Timeline struct {
				Events  []event `json:"events"`
				Limited bool    `json:"limited"`
			} `json:"timeline"`
		} `json:"peek"`
	} `json:"rooms"`
}

func peekSyncFrom(c *testserver.Client, since string) peekSync {
	var s peekSync
	q := "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		q += "&since=" + since
	}
	c.MustDo("GET", q, nil, &s)
	return s
}

// TestPeekWorldReadable: a device peeking into a world-readable room (by ID or
// alias) gets it under rooms.peek, from its creation on, in its next sync, then
// only its new events, and never under join; unpeeking ends it.
func TestPeekWorldReadable(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_alias_name": "peekable"})
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.history_visibility/", map[string]string{"history_visibility": "world_readable"}, nil)
		since := peekSyncFrom(bob, "").NextBatch

		for _, target := range []string{roomID, "#peekable:localhost"} {
			var out map[string]string
			bob.MustDo("POST", "/_matrix/client/v3/peek/"+url.PathEscape(target), map[string]any{}, &out)
			if out["room_id"] != roomID {
				t.Errorf("peek %s = %v; want room_id %s", target, out, roomID)
			}
		}
		msg := sendText(t, alice, roomID, "1", "something to peek")
		s := peekSyncFrom(bob, since)
		room, ok := s.Rooms.Peek[roomID]
		if !ok || len(s.Rooms.Join) != 0 {
			t.Fatalf("sync after peeking: peek %v, join %v; want the room under peek only", s.Rooms.Peek, s.Rooms.Join)
		}
		tl := room.Timeline.Events
		if len(tl) == 0 || tl[0].Type != "m.room.create" || tl[len(tl)-1].EventID != msg || len(room.State.Events) != 0 {
			t.Errorf("first peek: timeline %d events (first %v), %d state; want create first, the message last, no state", len(tl), tl, len(room.State.Events))
		}
		if s = peekSyncFrom(bob, s.NextBatch); len(s.Rooms.Peek) != 0 {
			t.Errorf("sync with nothing new: peek %v; want none", s.Rooms.Peek)
		}
		second := sendText(t, alice, roomID, "2", "something else")
		s = peekSyncFrom(bob, s.NextBatch)
		if tl := s.Rooms.Peek[roomID].Timeline.Events; len(tl) != 1 || tl[0].EventID != second {
			t.Errorf("peek after a new message: timeline %v; want just it", tl)
		}

		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/unpeek", map[string]any{}, nil)
		sendText(t, alice, roomID, "3", "after unpeek")
		if s = peekSyncFrom(bob, s.NextBatch); len(s.Rooms.Peek) != 0 {
			t.Errorf("sync after unpeeking: peek %v; want none", s.Rooms.Peek)
		}
	})
}
