package clientapi_test

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestAccountRestrictionAdminOnly: only a server admin reads or sets a lock or a
// suspension, never on themselves, another admin, another server's user or an
// unknown one (spec v1.18 admin endpoints).
func TestAccountRestrictionAdminOnly(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		root := sharedSecretRegister(t, srv, "root", "pw", true)
		other := sharedSecretRegister(t, srv, "root2", "pw", true)
		mallory := srv.Register(t, "mallory", "pw")
		bob := srv.Register(t, "bob", "pw")
		path := func(kind, user string) string { return "/_matrix/client/v1/admin/" + kind + "/" + url.PathEscape(user) }
		for _, kind := range []string{"suspend", "lock"} {
			field := map[string]string{"suspend": "suspended", "lock": "locked"}[kind]
			for _, c := range []struct {
				name    string
				client  *testserver.Client
				method  string
				user    string
				status  int
				errcode string
			}{
				{"anonymous read", srv.Client(t), "GET", bob.UserID, 401, "M_MISSING_TOKEN"},
				{"non-admin read", mallory, "GET", bob.UserID, 403, "M_FORBIDDEN"},
				{"non-admin set", mallory, "PUT", bob.UserID, 403, "M_FORBIDDEN"},
				{"admin on itself", root, "PUT", "@root:localhost", 403, "M_FORBIDDEN"},
				{"admin on another admin", other, "PUT", "@root:localhost", 403, "M_FORBIDDEN"},
				{"remote user", root, "PUT", "@bob:elsewhere.example", 400, "M_INVALID_PARAM"},
				{"unknown user", root, "PUT", "@ghost:localhost", 404, "M_NOT_FOUND"},
			} {
				status, body := c.client.Raw(c.method, path(kind, c.user), map[string]bool{field: true})
				var e errBody
				json.Unmarshal(body, &e)
				if status != c.status || e.ErrCode != c.errcode {
					t.Errorf("%s %s: %d %s; want %d %s", kind, c.name, status, body, c.status, c.errcode)
				}
			}
			var caps struct {
				Capabilities struct {
					Moderation map[string]bool `json:"m.account_moderation"`
				} `json:"capabilities"`
			}
			root.MustDo("GET", "/_matrix/client/v3/capabilities", nil, &caps)
			if !caps.Capabilities.Moderation[kind] {
				t.Errorf("admin's m.account_moderation = %v; want %s true", caps.Capabilities.Moderation, kind)
			}
			mallory.MustDo("GET", "/_matrix/client/v3/capabilities", nil, &caps)
			if caps.Capabilities.Moderation[kind] {
				t.Errorf("non-admin's m.account_moderation = %v; want %s false", caps.Capabilities.Moderation, kind)
			}
			var got map[string]bool
			root.MustDo("GET", path(kind, bob.UserID), nil, &got)
			if got[field] {
				t.Errorf("%s of bob after refused attempts = %v; want false", kind, got)
			}
		}
	}, func(c *config.Config) { c.Registration.SharedSecret = "let-me-in" })
}

// TestSuspendedAccount: a suspended user reads, leaves and takes back their own
// events, and cannot create rooms, join, invite, send or change their profile.
func TestSuspendedAccount(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		root := sharedSecretRegister(t, srv, "root", "pw", true)
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		other := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		own := sendText(t, bob, room, "b1", "before")
		theirs := sendText(t, alice, room, "a1", "alice's")

		var got map[string]bool
		root.MustDo("PUT", "/_matrix/client/v1/admin/suspend/"+url.PathEscape(bob.UserID), map[string]bool{"suspended": true}, &got)
		if !got["suspended"] {
			t.Fatalf("suspend answered %v", got)
		}
		for _, c := range []struct {
			name, method, path string
			body               any
		}{
			{"create a room", "POST", "/_matrix/client/v3/createRoom", map[string]any{}},
			{"send", "PUT", "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/b2", map[string]string{"msgtype": "m.text", "body": "x"}},
			{"set state", "PUT", "/_matrix/client/v3/rooms/" + room + "/state/m.room.topic/", map[string]string{"topic": "x"}},
			{"join", "POST", "/_matrix/client/v3/join/" + other, map[string]any{}},
			{"invite", "POST", "/_matrix/client/v3/rooms/" + room + "/invite", map[string]string{"user_id": "@root:localhost"}},
			{"set displayname", "PUT", "/_matrix/client/v3/profile/" + url.PathEscape(bob.UserID) + "/displayname", map[string]string{"displayname": "B"}},
			{"redact someone else's event", "PUT", "/_matrix/client/v3/rooms/" + room + "/redact/" + url.PathEscape(theirs) + "/r1", map[string]any{}},
		} {
			status, body := bob.Raw(c.method, c.path, c.body)
			var e errBody
			json.Unmarshal(body, &e)
			if status != 403 || e.ErrCode != "M_USER_SUSPENDED" {
				t.Errorf("suspended user may not %s: %d %s; want 403 M_USER_SUSPENDED", c.name, status, body)
			}
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, nil)
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/redact/"+url.PathEscape(own)+"/r2", map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+room+"/leave", map[string]any{}, nil)

		root.MustDo("PUT", "/_matrix/client/v1/admin/suspend/"+url.PathEscape(bob.UserID), map[string]bool{"suspended": false}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+other, map[string]any{}, nil)
		sendText(t, bob, other, "b3", "back")
	}, func(c *config.Config) { c.Registration.SharedSecret = "let-me-in" })
}

// TestLockedAccount: a locked account's every request but logout answers 401
// M_USER_LOCKED with soft_logout, and the session works again once unlocked.
func TestLockedAccount(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		root := sharedSecretRegister(t, srv, "root", "pw", true)
		bob := srv.Register(t, "bob", "pw")
		lock := func(on bool) {
			root.MustDo("PUT", "/_matrix/client/v1/admin/lock/"+url.PathEscape(bob.UserID), map[string]bool{"locked": on}, nil)
		}
		lock(true)
		for _, p := range []string{"/_matrix/client/v3/account/whoami", "/_matrix/client/v3/sync?timeout=0", "/_matrix/client/v3/profile/" + url.PathEscape(bob.UserID)} {
			status, body := bob.Raw("GET", p, nil)
			var e errBody
			json.Unmarshal(body, &e)
			if status != 401 || e.ErrCode != "M_USER_LOCKED" || e.SoftLogout == nil || !*e.SoftLogout {
				t.Errorf("locked GET %s = %d %s; want 401 M_USER_LOCKED with soft_logout", p, status, body)
			}
		}
		lock(false)
		bob.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, nil)
		lock(true)
		bob.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, nil)
	}, func(c *config.Config) { c.Registration.SharedSecret = "let-me-in" })
}
