package clientapi_test

import (
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestPeekRefused: peeking needs an access token, a room that exists, and a
// world-readable one; a peek is the peeking device's alone; and a room that stops
// being world-readable stops coming under peek.
func TestPeekRefused(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		open := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+open+"/state/m.room.history_visibility/", map[string]string{"history_visibility": "world_readable"}, nil)
		for _, vis := range []string{"shared", "invited", "joined"} {
			roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.history_visibility/", map[string]string{"history_visibility": vis}, nil)
			var e errBody
			if st := bob.Do("POST", "/_matrix/client/v3/peek/"+roomID, map[string]any{}, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
				t.Errorf("peek into a %s room = %d %s; want 403 M_FORBIDDEN", vis, st, e.ErrCode)
			}
		}
		var e errBody
		if st := srv.Client(t).Do("POST", "/_matrix/client/v3/peek/"+open, map[string]any{}, &e); st != 401 {
			t.Errorf("peek without a token = %d; want 401", st)
		}
		if st := bob.Do("POST", "/_matrix/client/v3/peek/!nowhere:localhost", map[string]any{}, &e); st != 404 || e.ErrCode != "M_NOT_FOUND" {
			t.Errorf("peek into an unknown room = %d %s; want 404 M_NOT_FOUND", st, e.ErrCode)
		}
		if st := bob.Do("POST", "/_matrix/client/v3/peek/%23nowhere:localhost", map[string]any{}, &e); st != 404 {
			t.Errorf("peek by an unknown alias = %d; want 404", st)
		}

		other := loginAgain(t, srv, bob, "pw")
		since, otherSince := peekSyncFrom(bob, "").NextBatch, peekSyncFrom(other, "").NextBatch
		bob.MustDo("POST", "/_matrix/client/v3/peek/"+open, map[string]any{}, nil)
		sendText(t, alice, open, "1", "peeked")
		if s := peekSyncFrom(other, otherSince); len(s.Rooms.Peek) != 0 {
			t.Errorf("bob's other device: peek %v; want none (the peek is the peeking device's)", s.Rooms.Peek)
		}
		s := peekSyncFrom(bob, since)
		if _, ok := s.Rooms.Peek[open]; !ok {
			t.Fatalf("peeking device: peek %v; want the room", s.Rooms.Peek)
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+open+"/state/m.room.history_visibility/", map[string]string{"history_visibility": "joined"}, nil)
		secret := sendText(t, alice, open, "2", "members only")
		if s = peekSyncFrom(bob, s.NextBatch); len(s.Rooms.Peek) != 0 {
			t.Errorf("after the room stopped being world-readable: peek %v; want none (message %s hidden)", s.Rooms.Peek, secret)
		}
	})
}
