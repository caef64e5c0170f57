package federation_test

import (
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// TestRemoteServerFollowsUpgrade: when a room is upgraded on another server, the
// first local join into the replacement moves this server's aliases of the old room
// and its place in this server's directory to the new room.
func TestRemoteServerFollowsUpgrade(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		_, b, alice, bob, room := joinedPair(t, d)
		alias := "#bobs:" + b.Config.ServerName
		bob.MustDo("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), map[string]string{"room_id": room}, nil)
		var pl map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels", nil, &pl)
		pl["users"].(map[string]any)[bob.UserID] = 100
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels", pl, nil)
		waitFor(t, "B to see bob's new power", func() bool {
			var got map[string]any
			bob.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels", nil, &got)
			users, _ := got["users"].(map[string]any)
			return users[bob.UserID] == float64(100)
		})
		bob.MustDo("PUT", "/_matrix/client/v3/directory/list/room/"+url.PathEscape(room), map[string]string{"visibility": "public"}, nil)

		var out map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/upgrade", map[string]string{"new_version": "10"}, &out)
		newRoom := out["replacement_room"]
		waitFor(t, "B to hold the tombstone", func() bool {
			return stateField(bob, room, "m.room.tombstone", "replacement_room") == newRoom
		})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(newRoom), map[string]any{}, nil)

		var resolved map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil, &resolved)
		if resolved["room_id"] != newRoom {
			t.Errorf("B's alias after bob joined the replacement = %v; want %s", resolved["room_id"], newRoom)
		}
		for id, want := range map[string]string{newRoom: "public", room: "private"} {
			var vis map[string]string
			bob.MustDo("GET", "/_matrix/client/v3/directory/list/room/"+url.PathEscape(id), nil, &vis)
			if vis["visibility"] != want {
				t.Errorf("B's directory visibility of %s = %v; want %s", id, vis, want)
			}
		}
	})
}
