package federation_test

import (
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestRescindedInviteReachesInvitee: an invite withdrawn on the inviter's server
// (a kick of the invitee) reaches the invitee's server, which is not in the room:
// the invitee's membership there becomes leave and their sync stops offering the
// invite.
func TestRescindedInviteReachesInvitee(t *testing.T) {
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{bob.UserID}}, &created)
		room := created["room_id"]
		membership := func() string {
			var out map[string]any
			bob.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(bob.UserID), nil, &out)
			m, _ := out["membership"].(string)
			return m
		}
		invited := func() bool {
			var sync struct {
				Rooms struct {
					Invite map[string]any `json:"invite"`
				} `json:"rooms"`
			}
			bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &sync)
			_, ok := sync.Rooms.Invite[room]
			return ok
		}
		waitFor(t, "bob's invite", invited)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/kick", map[string]any{"user_id": bob.UserID, "reason": "never mind"}, nil)
		waitFor(t, "the invite withdrawn on bob's server", func() bool { return !invited() })
		if m := membership(); m == "invite" {
			t.Errorf("bob's membership after the rescind = %q; want no invite", m)
		}
	})
}
