package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestSyncHeroesOnlyForUnnamedRooms: the summary's m.heroes are for rooms a client
// must name from their members: present while the room has no name and no canonical
// alias (an empty name counts as none), absent once it has either.
func TestSyncHeroesOnlyForUnnamedRooms(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		for _, tc := range []struct {
			name       string
			state      map[string]map[string]any // type -> content
			wantHeroes bool
		}{
			{"no name", nil, true},
			{"empty name", map[string]map[string]any{"m.room.name": {"name": ""}}, true},
			{"named", map[string]map[string]any{"m.room.name": {"name": "Named"}}, false},
			{"canonical alias", map[string]map[string]any{"m.room.canonical_alias": {"alias": "#heroes-" + "x:localhost"}}, false},
		} {
			roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
			if tc.name == "canonical alias" {
				alice.MustDo("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#heroes-x:localhost"), map[string]string{"room_id": roomID}, nil)
			}
			bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
			for typ, content := range tc.state {
				alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/"+typ+"/", content, nil)
			}
			sum := doSync(t, alice, "").Rooms.Join[roomID].Summary
			if _, has := sum["m.heroes"]; has != tc.wantHeroes {
				t.Errorf("%s: summary %v; want m.heroes present %v", tc.name, sum, tc.wantHeroes)
			}
			if sum["m.joined_member_count"] != float64(2) {
				t.Errorf("%s: summary %v; want 2 joined", tc.name, sum)
			}
		}
	})
}
