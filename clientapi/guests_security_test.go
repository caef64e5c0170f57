package clientapi_test

import (
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestGuestUpgradeRefusesOthers: a guest access token upgrades only its own guest;
// a full account's token upgrades nothing; an unknown token is refused.
func TestGuestUpgradeRefusesOthers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		g1, g2 := registerGuest(t, srv), registerGuest(t, srv)
		local1 := g1.UserID[1 : len(g1.UserID)-len(":localhost")]
		dummy := map[string]string{"type": "m.login.dummy"}
		for _, tc := range []struct {
			name, username, token string
		}{
			{"another guest's token", local1, g2.Token},
			{"a full account's token", local1, alice.Token},
			{"an unknown token", local1, "hya_nope"},
			{"a guest's token for a full account", "alice", g1.Token},
		} {
			var e errBody
			st := srv.Client(t).Do("POST", "/_matrix/client/v3/register", map[string]any{
				"username": tc.username, "password": "pw2", "guest_access_token": tc.token, "auth": dummy}, &e)
			if st != 403 || e.ErrCode != "M_FORBIDDEN" {
				t.Errorf("upgrade %s with %s = %d %s; want 403 M_FORBIDDEN", tc.username, tc.name, st, e.ErrCode)
			}
		}
		var who map[string]any
		g1.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, &who)
		if who["is_guest"] != true {
			t.Errorf("g1 after refused upgrades = %v; want still a guest", who)
		}
		var login map[string]any
		if st := srv.Client(t).Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "pw"}, &login); st != 200 {
			t.Errorf("alice's login after a refused takeover = %d; want 200 (password unchanged)", st)
		}
	}, withGuests)
}
