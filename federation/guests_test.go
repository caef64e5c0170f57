package federation_test

import (
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestGuestsInRemoteRooms: a local guest may join another server's room only if it
// allows guests (a room held elsewhere shows that only once joined: the guest then
// leaves and is refused), and leaves when that server revokes guest access.
func TestGuestsInRemoteRooms(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated, func(c *config.Config) { c.Registration.Guests = true })
		b := testserver.Start(t, d, testserver.Federated)
		bob := b.Register(t, "bob", "pw")
		guest := a.Client(t)
		var reg struct {
			UserID      string `json:"user_id"`
			AccessToken string `json:"access_token"`
		}
		guest.MustDo("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{}, &reg)
		guest.Token, guest.UserID = reg.AccessToken, reg.UserID

		room := func(access string) string {
			var created map[string]string
			bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{guest.UserID},
				"initial_state": []map[string]any{{"type": "m.room.guest_access", "state_key": "", "content": map[string]string{"guest_access": access}}}}, &created)
			return created["room_id"]
		}
		membership := func(c *testserver.Client, roomID string) string {
			return stateField(c, roomID, "m.room.member/"+url.PathEscape(guest.UserID), "membership")
		}

		closed := room("forbidden")
		waitFor(t, "the guest's invite", func() bool {
			var s struct {
				Rooms struct {
					Invite map[string]any `json:"invite"`
				} `json:"rooms"`
			}
			guest.MustDo("GET", "/_matrix/client/v3/sync?timeout=1000", nil, &s)
			return s.Rooms.Invite[closed] != nil
		})
		var e struct {
			ErrCode string `json:"errcode"`
		}
		if st := guest.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(closed), map[string]any{}, &e); st != 403 {
			t.Errorf("guest joins a remote room without guest access = %d %s; want 403", st, e.ErrCode)
		}
		waitFor(t, "B to see the refused guest gone", func() bool { return membership(bob, closed) == "leave" })

		open := room("can_join")
		waitFor(t, "the guest to join the open room", func() bool {
			return guest.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(open), map[string]any{}, nil) == 200
		})
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(open)+"/state/m.room.guest_access", map[string]string{"guest_access": "forbidden"}, nil)
		waitFor(t, "A to make its guest leave", func() bool { return membership(bob, open) == "leave" })
	})
}
