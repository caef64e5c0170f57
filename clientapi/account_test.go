package clientapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// forEachEngine runs fn against a fresh server on each database engine.
func forEachEngine(t *testing.T, fn func(t *testing.T, srv *testserver.Server), opts ...testserver.Option) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, testserver.Start(t, d, opts...))
		})
	}
}

type errBody struct {
	ErrCode    string `json:"errcode"`
	Error      string `json:"error"`
	SoftLogout *bool  `json:"soft_logout"`
}

func TestRegisterLoginAndAccountLifecycle(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		anon := srv.Client(t)

		// The first /register step returns the flows and a session.
		var challenge struct {
			Flows   []struct{ Stages []string } `json:"flows"`
			Session string                      `json:"session"`
		}
		if st := anon.Do("POST", "/_matrix/client/v3/register", map[string]any{"username": "alice", "password": "pw-alice"}, &challenge); st != 401 {
			t.Fatalf("register without auth = %d; want 401", st)
		}
		if challenge.Session == "" || len(challenge.Flows) != 1 || challenge.Flows[0].Stages[0] != "m.login.dummy" {
			t.Fatalf("challenge = %+v; want one m.login.dummy flow and a session", challenge)
		}
		var reg map[string]any
		anon.MustDo("POST", "/_matrix/client/v3/register", map[string]any{
			"username": "Alice", "password": "pw-alice", "initial_device_display_name": "laptop",
			"auth": map[string]string{"type": "m.login.dummy", "session": challenge.Session},
		}, &reg)
		if reg["user_id"] != "@alice:localhost" || reg["access_token"] == "" || reg["device_id"] == "" {
			t.Fatalf("register = %v; want @alice:localhost with a token and device", reg)
		}
		laptop := anon.WithToken(reg["access_token"].(string))

		// The spent session cannot register a second account.
		if st := anon.Do("POST", "/_matrix/client/v3/register", map[string]any{
			"username": "mallory", "password": "pw", "auth": map[string]string{"type": "m.login.dummy", "session": challenge.Session},
		}, nil); st != 400 {
			t.Errorf("register with a spent session = %d; want 400", st)
		}

		var avail errBody
		if st := anon.Do("GET", "/_matrix/client/v3/register/available?username=alice", nil, &avail); st != 400 || avail.ErrCode != "M_USER_IN_USE" {
			t.Errorf("available(alice) = %d %s; want 400 M_USER_IN_USE", st, avail.ErrCode)
		}
		var ok map[string]bool
		anon.MustDo("GET", "/_matrix/client/v3/register/available?username=bob", nil, &ok)
		if !ok["available"] {
			t.Errorf("available(bob) = %v; want true", ok)
		}

		// Log in by localpart, by full user ID, and by the deprecated user field.
		logins := []map[string]any{
			{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "pw-alice"},
			{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "@alice:localhost"}, "password": "pw-alice", "device_id": "PHONE"},
			{"type": "m.login.password", "user": "ALICE", "password": "pw-alice", "refresh_token": true},
		}
		var sessions []map[string]any
		for i, body := range logins {
			var out map[string]any
			anon.MustDo("POST", "/_matrix/client/v3/login", body, &out)
			sessions = append(sessions, out)
			var who map[string]any
			anon.WithToken(out["access_token"].(string)).MustDo("GET", "/_matrix/client/v3/account/whoami", nil, &who)
			if who["user_id"] != "@alice:localhost" || who["device_id"] != out["device_id"] || who["is_guest"] != false {
				t.Errorf("whoami after login %d = %v; want alice on device %v", i, who, out["device_id"])
			}
		}
		if sessions[1]["device_id"] != "PHONE" {
			t.Errorf("login with device_id PHONE got device %v", sessions[1]["device_id"])
		}
		if sessions[2]["refresh_token"] == nil || sessions[2]["expires_in_ms"] == nil {
			t.Fatalf("login with refresh_token = %v; want refresh_token and expires_in_ms", sessions[2])
		}

		// Refresh: the new access token works and the old pair is dead.
		var refreshed map[string]any
		anon.MustDo("POST", "/_matrix/client/v3/refresh", map[string]any{"refresh_token": sessions[2]["refresh_token"]}, &refreshed)
		anon.WithToken(refreshed["access_token"].(string)).MustDo("GET", "/_matrix/client/v3/account/whoami", nil, nil)
		if st := anon.WithToken(sessions[2]["access_token"].(string)).Do("GET", "/_matrix/client/v3/account/whoami", nil, nil); st != 401 {
			t.Errorf("old access token after refresh = %d; want 401", st)
		}
		if st := anon.Do("POST", "/_matrix/client/v3/refresh", map[string]any{"refresh_token": sessions[2]["refresh_token"]}, nil); st != 401 {
			t.Errorf("reused refresh token = %d; want 401", st)
		}

		// Devices: list, rename, read back.
		var devs struct {
			Devices []struct {
				DeviceID    string  `json:"device_id"`
				DisplayName *string `json:"display_name"`
			} `json:"devices"`
		}
		laptop.MustDo("GET", "/_matrix/client/v3/devices", nil, &devs)
		if len(devs.Devices) != 4 {
			t.Fatalf("devices = %+v; want 4 (register + 3 logins)", devs.Devices)
		}
		laptop.MustDo("PUT", "/_matrix/client/v3/devices/PHONE", map[string]string{"display_name": "my phone"}, nil)
		var phone map[string]any
		laptop.MustDo("GET", "/_matrix/client/v3/devices/PHONE", nil, &phone)
		if phone["display_name"] != "my phone" {
			t.Errorf("renamed device = %v; want display_name \"my phone\"", phone)
		}

		// Deleting a device needs the password; afterwards its token is dead.
		var ch map[string]any
		if st := laptop.Do("DELETE", "/_matrix/client/v3/devices/PHONE", map[string]any{}, &ch); st != 401 || ch["session"] == nil {
			t.Fatalf("delete device without auth = %d %v; want a 401 challenge", st, ch)
		}
		var wrong errBody
		if st := laptop.Do("DELETE", "/_matrix/client/v3/devices/PHONE", map[string]any{"auth": map[string]any{
			"type": "m.login.password", "session": ch["session"], "password": "wrong",
			"identifier": map[string]string{"type": "m.id.user", "user": "alice"}}}, &wrong); st != 401 || wrong.ErrCode != "M_FORBIDDEN" {
			t.Errorf("delete device with wrong password = %d %s; want 401 M_FORBIDDEN", st, wrong.ErrCode)
		}
		laptop.MustDo("DELETE", "/_matrix/client/v3/devices/PHONE", map[string]any{"auth": map[string]any{
			"type": "m.login.password", "session": ch["session"], "password": "pw-alice",
			"identifier": map[string]string{"type": "m.id.user", "user": "alice"}}}, nil)
		if st := anon.WithToken(sessions[1]["access_token"].(string)).Do("GET", "/_matrix/client/v3/account/whoami", nil, nil); st != 401 {
			t.Errorf("token of deleted device = %d; want 401", st)
		}

		// Profile.
		laptop.MustDo("PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", map[string]string{"displayname": "Alice A."}, nil)
		laptop.MustDo("PUT", "/_matrix/client/v3/profile/@alice:localhost/avatar_url", map[string]string{"avatar_url": "mxc://localhost/abc"}, nil)
		var prof map[string]any
		anon.MustDo("GET", "/_matrix/client/v3/profile/@alice:localhost", nil, &prof)
		if prof["displayname"] != "Alice A." || prof["avatar_url"] != "mxc://localhost/abc" {
			t.Errorf("profile = %v; want the displayname and avatar just set", prof)
		}
		var dn map[string]any
		anon.MustDo("GET", "/_matrix/client/v3/profile/@alice:localhost/displayname", nil, &dn)
		if len(dn) != 1 || dn["displayname"] != "Alice A." {
			t.Errorf("displayname = %v", dn)
		}

		// Account data, global and per room, and filters.
		laptop.MustDo("PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/im.test", map[string]any{"a": 1}, nil)
		laptop.MustDo("PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/im.test", map[string]any{"a": 2}, nil)
		laptop.MustDo("PUT", "/_matrix/client/v3/user/@alice:localhost/rooms/!r:localhost/account_data/im.test", map[string]any{"room": true}, nil)
		var ad map[string]any
		laptop.MustDo("GET", "/_matrix/client/v3/user/@alice:localhost/account_data/im.test", nil, &ad)
		if ad["a"] != float64(2) {
			t.Errorf("global account data = %v; want the second write", ad)
		}
		laptop.MustDo("GET", "/_matrix/client/v3/user/@alice:localhost/rooms/!r:localhost/account_data/im.test", nil, &ad)
		if ad["room"] != true {
			t.Errorf("room account data = %v", ad)
		}
		// Secret storage key IDs are base64 and may hold a '/', which clients escape.
		laptop.MustDo("PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/m.secret_storage.key.ab%2Fcd", map[string]any{"k": 1}, nil)
		laptop.MustDo("GET", "/_matrix/client/v3/user/@alice:localhost/account_data/m.secret_storage.key.ab%2Fcd", nil, &ad)
		if ad["k"] != float64(1) {
			t.Errorf("account data under an escaped slash = %v", ad)
		}
		var f1, f2 map[string]string
		laptop.MustDo("POST", "/_matrix/client/v3/user/@alice:localhost/filter", map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 10}}}, &f1)
		laptop.MustDo("POST", "/_matrix/client/v3/user/@alice:localhost/filter", map[string]any{"presence": map[string]any{"not_types": []string{"*"}}}, &f2)
		if f1["filter_id"] == f2["filter_id"] {
			t.Errorf("two filters got the same ID %q", f1["filter_id"])
		}
		var fl map[string]any
		laptop.MustDo("GET", "/_matrix/client/v3/user/@alice:localhost/filter/"+f1["filter_id"], nil, &fl)
		if fl["room"].(map[string]any)["timeline"].(map[string]any)["limit"] != float64(10) {
			t.Errorf("filter = %v", fl)
		}

		// Password change logs other devices out and the old password stops working.
		pwAuth := map[string]any{"type": "m.login.password", "password": "pw-alice", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}}
		laptop.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "pw-new", "auth": pwAuth}, nil)
		laptop.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, nil)
		if st := anon.WithToken(sessions[0]["access_token"].(string)).Do("GET", "/_matrix/client/v3/account/whoami", nil, nil); st != 401 {
			t.Errorf("other device after password change = %d; want 401", st)
		}
		if st := anon.Do("POST", "/_matrix/client/v3/login", logins[0], nil); st != 403 {
			t.Errorf("login with old password = %d; want 403", st)
		}

		// m.login.token: get one (with UIA), log in with it once.
		var lt map[string]any
		pwAuth["password"] = "pw-new"
		laptop.MustDo("POST", "/_matrix/client/v1/login/get_token", map[string]any{"auth": pwAuth}, &lt)
		tokenLogin := map[string]any{"type": "m.login.token", "token": lt["login_token"]}
		anon.MustDo("POST", "/_matrix/client/v3/login", tokenLogin, nil)
		if st := anon.Do("POST", "/_matrix/client/v3/login", tokenLogin, nil); st != 403 {
			t.Errorf("second use of a login token = %d; want 403", st)
		}

		// Logout, logout/all, deactivation.
		var other map[string]any
		anon.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw-new"}, &other)
		otherC := anon.WithToken(other["access_token"].(string))
		otherC.MustDo("POST", "/_matrix/client/v3/logout", nil, nil)
		if st := otherC.Do("GET", "/_matrix/client/v3/account/whoami", nil, nil); st != 401 {
			t.Errorf("after logout = %d; want 401", st)
		}
		laptop.MustDo("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"auth": pwAuth}, nil)
		var gone errBody
		if st := anon.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw-new"}, &gone); st != 403 || gone.ErrCode != "M_USER_DEACTIVATED" {
			t.Errorf("login after deactivation = %d %s; want 403 M_USER_DEACTIVATED", st, gone.ErrCode)
		}
		if st := anon.Do("GET", "/_matrix/client/v3/register/available?username=alice", nil, nil); st != 400 {
			t.Errorf("deactivated name available = %d; want 400 (never reused)", st)
		}
	})
}

func TestBadInputGetsSpecErrors(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw-alice")
		anon := srv.Client(t)
		bigName := strings.Repeat("x", 2<<20)
		cases := []struct {
			name       string
			client     *testserver.Client
			method     string
			path       string
			body       any
			wantStatus int
			wantCode   string
		}{
			{"malformed JSON", anon, "POST", "/_matrix/client/v3/login", `{"type":`, 400, "M_NOT_JSON"},
			{"not an object", anon, "POST", "/_matrix/client/v3/login", `[1,2]`, 400, "M_BAD_JSON"},
			{"wrong type", anon, "POST", "/_matrix/client/v3/login", `{"type":"m.login.password","password":5}`, 400, "M_BAD_JSON"},
			{"missing login type", anon, "POST", "/_matrix/client/v3/login", `{}`, 400, "M_MISSING_PARAM"},
			{"unknown login type", anon, "POST", "/_matrix/client/v3/login", `{"type":"m.login.magic"}`, 400, "M_UNKNOWN"},
			{"wrong password", anon, "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "alice", "password": "nope"}, 403, "M_FORBIDDEN"},
			{"unknown user", anon, "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "user": "zed", "password": "nope"}, 403, "M_FORBIDDEN"},
			{"oversized body", anon, "POST", "/_matrix/client/v3/login", `{"type":"` + bigName + `"}`, 413, "M_TOO_LARGE"},
			{"unknown endpoint", anon, "GET", "/_matrix/client/v3/no/such/thing", nil, 404, "M_UNRECOGNIZED"},
			{"wrong method", anon, "DELETE", "/_matrix/client/v3/login", nil, 405, "M_UNRECOGNIZED"},
			{"missing token", anon, "GET", "/_matrix/client/v3/account/whoami", nil, 401, "M_MISSING_TOKEN"},
			{"invalid token", anon.WithToken("hya_bogus"), "GET", "/_matrix/client/v3/account/whoami", nil, 401, "M_UNKNOWN_TOKEN"},
			{"duplicate username", anon, "POST", "/_matrix/client/v3/register", map[string]any{"username": "alice", "password": "x", "auth": map[string]string{"type": "m.login.dummy"}}, 400, "M_USER_IN_USE"},
			{"invalid localpart", anon, "POST", "/_matrix/client/v3/register", map[string]any{"username": "al!ce", "password": "x"}, 400, "M_INVALID_USERNAME"},
			{"empty localpart", anon, "GET", "/_matrix/client/v3/register/available?username=%20", nil, 400, "M_INVALID_USERNAME"},
			// Without auth the first answer is the flows (as Synapse does); once the
			// client authenticates, the missing password is the error.
			{"register without password", anon, "POST", "/_matrix/client/v3/register", map[string]any{"username": "bob", "auth": map[string]any{"type": "m.login.dummy"}}, 400, "M_MISSING_PARAM"},
			{"unknown auth session", anon, "POST", "/_matrix/client/v3/register", map[string]any{"username": "bob", "password": "x", "auth": map[string]string{"type": "m.login.dummy", "session": "nope"}}, 400, "M_UNKNOWN"},
			{"bad register kind", anon, "POST", "/_matrix/client/v3/register?kind=robot", `{}`, 400, "M_INVALID_PARAM"},
			{"guests disabled", anon, "POST", "/_matrix/client/v3/register?kind=guest", `{}`, 403, "M_FORBIDDEN"},
			{"someone else's displayname", alice, "PUT", "/_matrix/client/v3/profile/@bob:localhost/displayname", map[string]any{"displayname": "B"}, 403, "M_FORBIDDEN"},
			{"displayname not a string", alice, "PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", `{"displayname":7}`, 400, "M_BAD_JSON"},
			{"displayname missing", alice, "PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", `{}`, 400, "M_MISSING_PARAM"},
			{"unknown profile", anon, "GET", "/_matrix/client/v3/profile/@nobody:localhost", nil, 404, "M_NOT_FOUND"},
			{"someone else's account data", alice, "PUT", "/_matrix/client/v3/user/@bob:localhost/account_data/x.y", `{}`, 403, "M_FORBIDDEN"},
			{"account data not an object", alice, "PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/x.y", `"str"`, 400, "M_BAD_JSON"},
			{"server-owned account data", alice, "PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/m.fully_read", `{}`, 405, "M_BAD_JSON"},
			{"account data bad room", alice, "PUT", "/_matrix/client/v3/user/@alice:localhost/rooms/notaroom/account_data/x.y", `{}`, 400, "M_INVALID_PARAM"},
			{"missing account data", alice, "GET", "/_matrix/client/v3/user/@alice:localhost/account_data/x.none", nil, 404, "M_NOT_FOUND"},
			{"filter wrong type", alice, "POST", "/_matrix/client/v3/user/@alice:localhost/filter", `{"room":{"timeline":{"limit":"ten"}}}`, 400, "M_BAD_JSON"},
			{"filter bad format", alice, "POST", "/_matrix/client/v3/user/@alice:localhost/filter", `{"event_format":"xml"}`, 400, "M_INVALID_PARAM"},
			{"filter bad sender", alice, "POST", "/_matrix/client/v3/user/@alice:localhost/filter", `{"presence":{"senders":["bob"]}}`, 400, "M_INVALID_PARAM"},
			{"unknown filter", alice, "GET", "/_matrix/client/v3/user/@alice:localhost/filter/99", nil, 404, "M_NOT_FOUND"},
			{"non-numeric filter", alice, "GET", "/_matrix/client/v3/user/@alice:localhost/filter/abc", nil, 404, "M_NOT_FOUND"},
			{"unknown device", alice, "GET", "/_matrix/client/v3/devices/NOPE", nil, 404, "M_NOT_FOUND"},
			{"rename unknown device", alice, "PUT", "/_matrix/client/v3/devices/NOPE", `{"display_name":"x"}`, 404, "M_NOT_FOUND"},
			{"delete_devices without list", alice, "POST", "/_matrix/client/v3/delete_devices", `{}`, 400, "M_MISSING_PARAM"},
			{"password change without new password", alice, "POST", "/_matrix/client/v3/account/password", `{}`, 400, "M_MISSING_PARAM"},
			{"refresh with unknown token", anon, "POST", "/_matrix/client/v3/refresh", `{"refresh_token":"nope"}`, 401, "M_UNKNOWN_TOKEN"},
			{"login token unknown", anon, "POST", "/_matrix/client/v3/login", `{"type":"m.login.token","token":"nope"}`, 403, "M_FORBIDDEN"},
			{"shared secret disabled", anon, "GET", "/_synapse/admin/v1/register", nil, 403, "M_FORBIDDEN"},
			{"admin API as non-admin", alice, "GET", "/_synapse/admin/v1/registration_tokens", nil, 403, "M_FORBIDDEN"},
			{"token validity malformed", anon, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=a%20b", nil, 400, "M_INVALID_PARAM"},
		}
		for _, tc := range cases {
			var got errBody
			st, data := tc.client.Raw(tc.method, tc.path, tc.body)
			if len(data) > 0 {
				if err := json.Unmarshal(data, &got); err != nil {
					t.Errorf("%s: %s %s: body %q is not JSON", tc.name, tc.method, tc.path, data)
					continue
				}
			}
			if st != tc.wantStatus || got.ErrCode != tc.wantCode {
				t.Errorf("%s: %s %s = %d %s (%s); want %d %s", tc.name, tc.method, tc.path, st, got.ErrCode, got.Error, tc.wantStatus, tc.wantCode)
			}
		}
		// After all that, the server still serves.
		alice.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, nil)
	})
}
