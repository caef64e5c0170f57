package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

func TestRegistrationTokensGateRegistration(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		anon := srv.Client(t)
		// Only the shared secret can make the first admin while registration needs a token.
		admin := sharedSecretRegister(t, srv, "root", "pw-root", true)

		var tok map[string]any
		admin.MustDo("POST", "/_synapse/admin/v1/registration_tokens/new", map[string]any{"token": "invite-1", "uses_allowed": 1}, &tok)
		if tok["token"] != "invite-1" || tok["uses_allowed"] != float64(1) {
			t.Fatalf("new token = %v", tok)
		}
		var valid map[string]bool
		anon.MustDo("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=invite-1", nil, &valid)
		if !valid["valid"] {
			t.Fatal("fresh token reported invalid")
		}

		// The flow asks for the token; a wrong one is refused inside the UIA.
		var ch struct {
			Flows   []struct{ Stages []string } `json:"flows"`
			Session string                      `json:"session"`
			ErrCode string                      `json:"errcode"`
		}
		body := map[string]any{"username": "dave", "password": "pw-dave"}
		if st := anon.Do("POST", "/_matrix/client/v3/register", body, &ch); st != 401 || ch.Flows[0].Stages[0] != "m.login.registration_token" {
			t.Fatalf("register = %d %+v; want the registration token flow", st, ch)
		}
		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": ch.Session}
		if st := anon.Do("POST", "/_matrix/client/v3/register", body, &ch); st != 401 || ch.ErrCode != "M_UNAUTHORIZED" {
			t.Fatalf("register with a wrong token = %d %s; want 401 M_UNAUTHORIZED", st, ch.ErrCode)
		}
		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "invite-1", "session": ch.Session}
		anon.MustDo("POST", "/_matrix/client/v3/register", body, nil)

		// The single use is spent.
		admin.MustDo("GET", "/_synapse/admin/v1/registration_tokens/invite-1", nil, &tok)
		if tok["completed"] != float64(1) || tok["pending"] != float64(0) {
			t.Errorf("token after use = %v; want completed 1, pending 0", tok)
		}
		anon.MustDo("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=invite-1", nil, &valid)
		if valid["valid"] {
			t.Error("spent token reported valid")
		}
		body = map[string]any{"username": "erin", "password": "pw", "auth": map[string]any{"type": "m.login.registration_token", "token": "invite-1"}}
		if st := anon.Do("POST", "/_matrix/client/v3/register", body, &ch); st != 401 || ch.ErrCode != "M_UNAUTHORIZED" {
			t.Errorf("register with a spent token = %d %s; want 401 M_UNAUTHORIZED", st, ch.ErrCode)
		}

		// Update, list and delete.
		admin.MustDo("PUT", "/_synapse/admin/v1/registration_tokens/invite-1", map[string]any{"uses_allowed": 5}, &tok)
		if tok["uses_allowed"] != float64(5) {
			t.Errorf("updated token = %v", tok)
		}
		var list struct {
			Tokens []map[string]any `json:"registration_tokens"`
		}
		admin.MustDo("GET", "/_synapse/admin/v1/registration_tokens", nil, &list)
		if len(list.Tokens) != 1 {
			t.Errorf("tokens = %v; want 1", list.Tokens)
		}
		admin.MustDo("DELETE", "/_synapse/admin/v1/registration_tokens/invite-1", nil, nil)
		if st := admin.Do("GET", "/_synapse/admin/v1/registration_tokens/invite-1", nil, nil); st != 404 {
			t.Errorf("deleted token = %d; want 404", st)
		}
	}, func(c *config.Config) {
		c.Registration.RequireToken = true
		c.Registration.SharedSecret = "let-me-in"
	})
}

// sharedSecretRegister registers through /_synapse/admin/v1/register as a bot would.
func sharedSecretRegister(t *testing.T, srv *testserver.Server, user, password string, admin bool) *testserver.Client {
	t.Helper()
	c := srv.Client(t)
	var nonce map[string]string
	c.MustDo("GET", "/_synapse/admin/v1/register", nil, &nonce)
	mac := hmac.New(sha1.New, []byte("let-me-in"))
	flag := "notadmin"
	if admin {
		flag = "admin"
	}
	mac.Write([]byte(strings.Join([]string{nonce["nonce"], user, password, flag}, "\x00")))
	var out map[string]any
	c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{
		"nonce": nonce["nonce"], "username": user, "password": password, "admin": admin, "mac": hex.EncodeToString(mac.Sum(nil)),
	}, &out)
	// A nonce works once.
	if st := c.Do("POST", "/_synapse/admin/v1/register", map[string]any{
		"nonce": nonce["nonce"], "username": user + "2", "password": password, "admin": admin, "mac": hex.EncodeToString(mac.Sum(nil)),
	}, nil); st != 400 {
		t.Errorf("reused nonce = %d; want 400", st)
	}
	return c.WithToken(out["access_token"].(string))
}

func TestSharedSecretRejectsBadMAC(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		c := srv.Client(t)
		var nonce map[string]string
		c.MustDo("GET", "/_synapse/admin/v1/register", nil, &nonce)
		var e errBody
		st := c.Do("POST", "/_synapse/admin/v1/register", map[string]any{
			"nonce": nonce["nonce"], "username": "x", "password": "y", "mac": "00ff"}, &e)
		if st != 400 || e.ErrCode != "M_UNKNOWN" {
			t.Errorf("bad MAC = %d %s; want 400 M_UNKNOWN", st, e.ErrCode)
		}
	}, func(c *config.Config) { c.Registration.SharedSecret = "let-me-in" })
}

func TestGuestsAndClosedRegistration(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		anon := srv.Client(t)
		var e errBody
		if st := anon.Do("POST", "/_matrix/client/v3/register", map[string]any{"username": "x", "password": "y"}, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
			t.Errorf("register while closed = %d %s; want 403 M_FORBIDDEN", st, e.ErrCode)
		}
		var guest map[string]any
		anon.MustDo("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{}, &guest)
		g := anon.WithToken(guest["access_token"].(string))
		var who map[string]any
		g.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, &who)
		if who["is_guest"] != true {
			t.Errorf("guest whoami = %v; want is_guest", who)
		}
		if st := g.Do("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "x"}, &e); st != 403 || e.ErrCode != "M_GUEST_ACCESS_FORBIDDEN" {
			t.Errorf("guest password change = %d %s; want 403 M_GUEST_ACCESS_FORBIDDEN", st, e.ErrCode)
		}
	}, func(c *config.Config) {
		no := false
		c.Registration.Enabled = &no
		c.Registration.Guests = true
	})
}

func TestConcurrentFilterCreationGivesDistinctIDs(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		c := srv.Register(t, "fil", "pw")
		const n = 8
		ids := make(chan string, n)
		for i := 0; i < n; i++ {
			go func() {
				var out map[string]string
				if st := c.Do("POST", "/_matrix/client/v3/user/@fil:localhost/filter", map[string]any{}, &out); st != 200 {
					t.Errorf("create filter = %d", st)
				}
				ids <- out["filter_id"]
			}()
		}
		seen := map[string]bool{}
		for i := 0; i < n; i++ {
			id := <-ids
			if seen[id] {
				t.Errorf("filter ID %q handed out twice", id)
			}
			seen[id] = true
		}
	})
}

func TestExpiredAccessTokenIsSoftLogout(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		srv.Register(t, "dora", "pw")
		anon := srv.Client(t)
		var login map[string]any
		anon.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "dora", "password": "pw", "refresh_token": true}, &login)
		if login["expires_in_ms"] != float64(1) {
			t.Fatalf("expires_in_ms = %v; want the configured 1", login["expires_in_ms"])
		}
		time.Sleep(5 * time.Millisecond) // let the 1 ms token lapse
		var e errBody
		if st := anon.WithToken(login["access_token"].(string)).Do("GET", "/_matrix/client/v3/account/whoami", nil, &e); st != 401 || e.ErrCode != "M_UNKNOWN_TOKEN" || e.SoftLogout == nil || !*e.SoftLogout {
			t.Fatalf("expired token = %d %s soft_logout %v; want 401 M_UNKNOWN_TOKEN soft_logout true", st, e.ErrCode, e.SoftLogout)
		}
		// The refresh token still works and the new access token too (for a moment).
		var refreshed map[string]any
		anon.MustDo("POST", "/_matrix/client/v3/refresh", map[string]any{"refresh_token": login["refresh_token"]}, &refreshed)
		if refreshed["access_token"] == login["access_token"] {
			t.Error("refresh returned the same access token")
		}
		// An unknown token is a hard logout.
		if st := anon.WithToken("hya_unknown").Do("GET", "/_matrix/client/v3/account/whoami", nil, &e); st != 401 || e.SoftLogout == nil || *e.SoftLogout {
			t.Errorf("unknown token = %d soft_logout %v; want 401 soft_logout false", st, e.SoftLogout)
		}
	}, func(c *config.Config) { c.Auth.AccessTokenLifetime = time.Millisecond })
}

// registerStart sends a registration's first step and returns its session.
func registerStart(t *testing.T, c *testserver.Client, body map[string]any) string {
	t.Helper()
	var ch struct {
		Session   string   `json:"session"`
		Completed []string `json:"completed"`
	}
	if st := c.Do("POST", "/_matrix/client/v3/register", body, &ch); st != 401 || ch.Session == "" || ch.Completed == nil {
		t.Fatalf("register %v = %d %+v; want 401 with a session and completed: []", body, st, ch)
	}
	return ch.Session
}

// TestRegistrationSessionRemembersAndRepeats: the auth session keeps the parameters
// of the step that sent them, so the last step may carry only the auth dict; and a
// finished session answers a repeat with the same account instead of an error or a
// second account.
func TestRegistrationSessionRemembersAndRepeats(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		anon := srv.Client(t)
		type sess struct {
			UserID      string `json:"user_id"`
			AccessToken string `json:"access_token"`
			DeviceID    string `json:"device_id"`
		}
		for _, tc := range []struct {
			name     string
			first    map[string]any
			wantUser string
			inhibit  bool
		}{
			{"device and non-ASCII password", map[string]any{"username": "remy", "password": "übers3kr1t", "device_id": "xyzzy",
				"initial_device_display_name": "display_name"}, "@remy:localhost", false},
			{"inhibit_login", map[string]any{"username": "ines", "password": "pw", "inhibit_login": true}, "@ines:localhost", true},
		} {
			session := registerStart(t, anon, tc.first)
			var s sess
			anon.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"auth": map[string]string{"type": "m.login.dummy", "session": session}}, &s)
			if s.UserID != tc.wantUser || (s.AccessToken == "") != tc.inhibit {
				t.Errorf("%s: register with only the auth dict = %+v; want %s, logged in %v", tc.name, s, tc.wantUser, !tc.inhibit)
				continue
			}
			if tc.inhibit {
				continue
			}
			var dev map[string]any
			anon.WithToken(s.AccessToken).MustDo("GET", "/_matrix/client/v3/devices/xyzzy", nil, &dev)
			if dev["display_name"] != "display_name" {
				t.Errorf("%s: device = %v; want the remembered display name", tc.name, dev)
			}
			pw := tc.first["password"].(string)
			anon.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
				"identifier": map[string]string{"type": "m.id.user", "user": tc.wantUser}, "password": pw}, nil)
		}

		// Repeating a finished registration, with or without a username, answers
		// with the same account; it neither fails nor makes another.
		for _, first := range []map[string]any{{"username": "idem", "password": "pw"}, {"password": "pw"}} {
			session := registerStart(t, anon, first)
			step := map[string]any{"auth": map[string]string{"type": "m.login.dummy", "session": session}}
			for k, v := range first {
				step[k] = v
			}
			var a, b sess
			anon.MustDo("POST", "/_matrix/client/v3/register", step, &a)
			anon.MustDo("POST", "/_matrix/client/v3/register", step, &b)
			if a.UserID == "" || a.UserID != b.UserID || b.AccessToken == "" {
				t.Errorf("register twice with session (%v) = %+v then %+v; want the same user, logged in", first, a, b)
			}
		}
		// A fresh session for a taken name is still refused.
		var e errBody
		if st := anon.Do("POST", "/_matrix/client/v3/register", map[string]any{"username": "idem", "password": "pw",
			"auth": map[string]string{"type": "m.login.dummy"}}, &e); st != 400 || e.ErrCode != "M_USER_IN_USE" {
			t.Errorf("register a taken name in a new session = %d %s; want 400 M_USER_IN_USE", st, e.ErrCode)
		}
	})
}

// TestAuthSessionIsBoundToItsOperation: a password stage for another user is
// refused (403) rather than re-challenged; a wrong password is a 401 challenge that
// lists the completed stages; and a session started to delete one device cannot
// finish deleting another.
func TestAuthSessionIsBoundToItsOperation(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw-a")
		srv.Register(t, "eve", "pw-e")
		for _, d := range []string{"one", "two"} {
			srv.Client(t).MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
				"identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "pw-a", "device_id": d}, nil)
		}
		password := func(user, pw, session string) map[string]any {
			a := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": user}, "password": pw}
			if session != "" {
				a["session"] = session
			}
			return map[string]any{"auth": a}
		}
		var e struct {
			ErrCode   string   `json:"errcode"`
			Completed []string `json:"completed"`
			Session   string   `json:"session"`
		}
		if st := alice.Do("DELETE", "/_matrix/client/v3/devices/one", password("@eve:localhost", "pw-e", ""), &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
			t.Errorf("delete alice's device with eve's password = %d %s; want 403 M_FORBIDDEN", st, e.ErrCode)
		}
		if st := alice.Do("POST", "/_matrix/client/v3/account/deactivate", password("@alice:localhost", "wrong", ""), &e); st != 401 || e.ErrCode != "M_FORBIDDEN" || e.Completed == nil {
			t.Errorf("deactivate with a wrong password = %d %+v; want 401 M_FORBIDDEN with completed", st, e)
		}
		if st := alice.Do("DELETE", "/_matrix/client/v3/devices/one", map[string]any{}, &e); st != 401 || e.Session == "" {
			t.Fatalf("delete device one without auth = %d %+v; want 401 with a session", st, e)
		}
		if st := alice.Do("DELETE", "/_matrix/client/v3/devices/two", password("@alice:localhost", "pw-a", e.Session), &e); st != 403 {
			t.Errorf("finish device one's session on device two = %d; want 403", st)
		}
		alice.MustDo("GET", "/_matrix/client/v3/devices/two", nil, nil)
		alice.MustDo("DELETE", "/_matrix/client/v3/devices/one", password("@alice:localhost", "pw-a", ""), nil)
		if st := alice.Do("GET", "/_matrix/client/v3/devices/one", nil, nil); st != 404 {
			t.Errorf("device one after its deletion = %d; want 404", st)
		}
	})
}
