package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestSearchOutsiders: search finds nothing in a room the caller is not in, nor
// history from before they joined when history_visibility is joined; an
// unauthenticated or badly formed request is refused with a Matrix error.
func TestSearchOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		mallory := srv.Register(t, "mallory", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat",
			"initial_state": []map[string]any{{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
		sendText(t, alice, room, "t1", "secret plan before bob")
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		after := sendText(t, alice, room, "t2", "secret plan after bob")
		private := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		sendText(t, alice, private, "t3", "secret plan private")
		waitIndexed(t, srv)

		if got := doSearch(t, alice, "", map[string]any{"search_term": "secret"}).ids(); len(got) != 3 {
			t.Fatalf("alice sees %v; want all 3", got)
		}
		if got := doSearch(t, bob, "", map[string]any{"search_term": "secret"}).ids(); len(got) != 1 || got[0] != after {
			t.Errorf("bob sees %v; want only [%s] (history before his join is hidden, the private room too)", got, after)
		}
		// Naming the private room in the filter does not open it.
		if got := doSearch(t, bob, "", map[string]any{"search_term": "secret", "filter": map[string]any{"rooms": []string{private}}}).ids(); len(got) != 0 {
			t.Errorf("bob filtering on the private room sees %v; want none", got)
		}
		if got := doSearch(t, mallory, "", map[string]any{"search_term": "secret"}).ids(); len(got) != 0 {
			t.Errorf("mallory (in no room) sees %v; want none", got)
		}
		// Once bob leaves he still sees what he saw, nothing sent after.
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
		sendText(t, alice, room, "t4", "secret plan after bob left")
		waitIndexed(t, srv)
		if got := doSearch(t, bob, "", map[string]any{"search_term": "secret"}).ids(); len(got) != 1 || got[0] != after {
			t.Errorf("bob after leaving sees %v; want only [%s]", got, after)
		}

		anon := srv.Client(t)
		body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "secret"}}}
		if status := anon.Do("POST", "/_matrix/client/v3/search", body, nil); status != 401 {
			t.Errorf("unauthenticated /search = %d; want 401", status)
		}
		if status := bob.WithToken("not-a-token").Do("POST", "/_matrix/client/v3/search", body, nil); status != 401 {
			t.Errorf("/search with a bad token = %d; want 401", status)
		}
		for name, tc := range map[string]struct {
			body any
			path string
			code string
		}{
			"no category":    {map[string]any{"search_categories": map[string]any{}}, "", "M_UNKNOWN"},
			"no term":        {map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}, "", "M_BAD_JSON"},
			"term not text":  {map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": 5}}}, "", "M_BAD_JSON"},
			"bad order":      {map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "order_by": "size"}}}, "", "M_INVALID_PARAM"},
			"bad key":        {map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "keys": []string{"content.url"}}}}, "", "M_INVALID_PARAM"},
			"bad group":      {map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "secret", "groupings": map[string]any{"group_by": []map[string]any{{"key": "type"}}}}}}, "", "M_INVALID_PARAM"},
			"bad next_batch": {body, "?next_batch=zz", "M_INVALID_PARAM"},
			"not an object":  {[]int{1}, "", "M_BAD_JSON"},
		} {
			var e errBody
			if status := alice.Do("POST", "/_matrix/client/v3/search"+tc.path, tc.body, &e); status != 400 || e.ErrCode != tc.code {
				t.Errorf("%s: /search = %d %s; want 400 %s", name, status, e.ErrCode, tc.code)
			}
		}
	})
}
