package native_test

import (
	"context"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// TestGetPresenceHiddenFromStrangers: the native get_presence op follows the same
// rule as GET /presence (homeserver/presence.GetFor): a stranger is refused with
// M_FORBIDDEN, a room-mate and the user see it.
func TestGetPresenceHiddenFromStrangers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		srv.Register(t, "carol", "pw")
		var room map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room["room_id"], map[string]any{}, nil)
		msg := "in a meeting"
		alice.MustDo("PUT", "/_matrix/client/v3/presence/"+alice.UserID+"/status", map[string]any{"presence": "unavailable", "status_msg": msg}, nil)

		for _, tc := range []struct {
			user, subject string
			code          string // "" for success
		}{
			{"carol", alice.UserID, "M_FORBIDDEN"},
			{"carol", "@nobody:localhost", "M_FORBIDDEN"},
			{"bob", alice.UserID, ""},
			{"alice", alice.UserID, ""},
			{"alice", "", ""}, // oneself
		} {
			c := dial(t, srv, sdk.Options{User: tc.user, Password: "pw"})
			p, err := c.Presence(ctx, tc.subject)
			if tc.code != "" {
				if e, ok := err.(*native.Error); !ok || e.Code != tc.code || p.Presence != "" {
					t.Errorf("get_presence %q by %s = %+v, %v; want %s", tc.subject, tc.user, p, err, tc.code)
				}
				continue
			}
			if err != nil || p.Presence != "unavailable" || p.StatusMsg == nil || *p.StatusMsg != msg {
				t.Errorf("get_presence %q by %s = %+v, %v; want unavailable, %q", tc.subject, tc.user, p, err, msg)
			}
		}
	})
}
