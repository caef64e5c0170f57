package appservice_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver"
	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestAppServiceBoundaries checks who may act as whom: a service only inside
// its namespace, nobody else inside an exclusive one, and no token but the
// right one.
func TestAppServiceBoundaries(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		b := newBridge(t, "gate", "gatebot", "")
		other := newBridge(t, "other", "otherbot", "")
		srv := testserver.Start(t, d, withBridges(b, other))
		as := srv.Client(t).WithToken("as-gate-secret")
		as.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "gate_bob"}, nil)
		alice := srv.Register(t, "alice", "pw-alice")
		var room struct {
			RoomID string `json:"room_id"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)

		cases := []struct {
			name       string
			client     *testserver.Client
			method     string
			path       string
			body       any
			wantStatus int
			wantCode   string
		}{
			{"masquerade outside the namespace", as, "GET", "/_matrix/client/v3/account/whoami?user_id=@alice:localhost", nil, 403, "M_FORBIDDEN"},
			{"masquerade as another service's user", as, "GET", "/_matrix/client/v3/account/whoami?user_id=@other_x:localhost", nil, 403, "M_FORBIDDEN"},
			{"masquerade as an unregistered user", as, "GET", "/_matrix/client/v3/account/whoami?user_id=@gate_nobody:localhost", nil, 403, "M_FORBIDDEN"},
			{"masquerade as a remote user", as, "GET", "/_matrix/client/v3/account/whoami?user_id=@gate_x:elsewhere.example", nil, 403, "M_FORBIDDEN"},
			{"device that is not the user's", as, "GET", "/_matrix/client/v3/account/whoami?user_id=@gate_bob:localhost&device_id=" + alice.Device, nil, 403, "M_FORBIDDEN"},
			{"service registers outside its namespace", as, "POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "carol"}, 400, "M_EXCLUSIVE"},
			{"service registers in another's namespace", as, "POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "other_carol"}, 400, "M_EXCLUSIVE"},
			{"user registers in an exclusive namespace", srv.Client(t), "POST", "/_matrix/client/v3/register", map[string]any{"username": "gate_carol", "password": "pw-carol-long", "auth": map[string]string{"type": "m.login.dummy"}}, 400, "M_EXCLUSIVE"},
			{"user takes a service's own name", srv.Client(t), "POST", "/_matrix/client/v3/register", map[string]any{"username": "gatebot", "password": "pw-carol-long", "auth": map[string]string{"type": "m.login.dummy"}}, 400, "M_EXCLUSIVE"},
			{"availability of an exclusive name", srv.Client(t), "GET", "/_matrix/client/v3/register/available?username=gate_dave", nil, 400, "M_EXCLUSIVE"},
			{"user creates an alias in an exclusive namespace", alice, "PUT", "/_matrix/client/v3/directory/room/%23gate_room:localhost", map[string]string{"room_id": room.RoomID}, 400, "M_EXCLUSIVE"},
			{"application_service registration without a token", srv.Client(t), "POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "gate_eve"}, 401, "M_MISSING_TOKEN"},
			{"application_service registration with a user's token", alice, "POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "gate_eve"}, 401, "M_MISSING_TOKEN"},
			{"application_service login without a token", srv.Client(t), "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service", "identifier": map[string]string{"type": "m.id.user", "user": "gate_bob"}}, 401, "M_MISSING_TOKEN"},
			{"application_service login outside the namespace", as, "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}}, 403, "M_FORBIDDEN"},
			{"wrong as_token", srv.Client(t).WithToken("as-gate-secreT"), "GET", "/_matrix/client/v3/account/whoami", nil, 401, "M_UNKNOWN_TOKEN"},
			{"hs_token used as an as_token", srv.Client(t).WithToken("hs-gate-secret"), "GET", "/_matrix/client/v3/account/whoami", nil, 401, "M_UNKNOWN_TOKEN"},
			{"user pings a service", alice, "POST", "/_matrix/client/v1/appservice/gate/ping", map[string]any{}, 403, "M_FORBIDDEN"},
			{"service pings another", as, "POST", "/_matrix/client/v1/appservice/other/ping", map[string]any{}, 403, "M_FORBIDDEN"},
			{"anonymous ping", srv.Client(t), "POST", "/_matrix/client/v1/appservice/gate/ping", map[string]any{}, 401, "M_MISSING_TOKEN"},
		}
		for _, c := range cases {
			status, data := c.client.Raw(c.method, c.path, c.body)
			var e struct {
				Errcode string `json:"errcode"`
			}
			_ = json.Unmarshal(data, &e)
			if status != c.wantStatus || e.Errcode != c.wantCode {
				t.Errorf("%s: %s %s = %d %s; want %d %s", c.name, c.method, c.path, status, data, c.wantStatus, c.wantCode)
			}
		}

		// What a service may do: act as itself, as its registered user, with
		// that user's device; a user's own user_id parameter changes nothing.
		whoami := func(c *testserver.Client, query string) (string, string) {
			var w struct {
				UserID   string `json:"user_id"`
				DeviceID string `json:"device_id"`
			}
			c.MustDo("GET", "/_matrix/client/v3/account/whoami"+query, nil, &w)
			return w.UserID, w.DeviceID
		}
		if u, _ := whoami(as, ""); u != "@gatebot:localhost" {
			t.Errorf("service's whoami = %s; want its sender @gatebot:localhost", u)
		}
		if u, _ := whoami(as, "?user_id=@gate_bob:localhost"); u != "@gate_bob:localhost" {
			t.Errorf("whoami as @gate_bob = %s", u)
		}
		var sess struct {
			DeviceID string `json:"device_id"`
		}
		as.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service",
			"identifier": map[string]string{"type": "m.id.user", "user": "gate_bob"}}, &sess)
		if u, dev := whoami(as, "?user_id=@gate_bob:localhost&device_id="+sess.DeviceID); u != "@gate_bob:localhost" || dev != sess.DeviceID {
			t.Errorf("whoami as @gate_bob's device = %s %s; want %s", u, dev, sess.DeviceID)
		}
		if u, _ := whoami(alice, "?user_id=@gate_bob:localhost"); u != "@alice:localhost" {
			t.Errorf("a user's user_id parameter made them %s", u)
		}
		// The service may create an alias in its own exclusive namespace.
		as.MustDo("PUT", "/_matrix/client/v3/directory/room/%23gate_room:localhost", map[string]string{"room_id": room.RoomID}, nil)
	})
}

// TestRateLimitsFollowTheRegistration: a service registered with rate_limited:
// false (and the users it acts as) is not limited; everyone else still is.
func TestRateLimitsFollowTheRegistration(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		b := newBridge(t, "fast", "fastbot", "")
		srv := testserver.Start(t, d, withBridges(b), func(c *config.Config) {
			c.RateLimit.Enabled, c.RateLimit.PerSecond, c.RateLimit.Burst = true, 0.01, 3
		})
		as := srv.Client(t).WithToken("as-fast-secret")
		for i := 0; i < 6; i++ { // registration takes no auth, yet the service is known by its token
			if status, data := as.Raw("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service",
				"username": fmt.Sprintf("fast_%d", i), "inhibit_login": true}); status != 200 {
				t.Fatalf("unlimited service's registration %d = %d %s; want 200", i, status, data)
			}
		}
		var room struct {
			RoomID string `json:"room_id"`
		}
		as.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, &room)
		for i := 0; i < 10; i++ {
			path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/r%d", room.RoomID, i)
			if status, data := as.Raw("PUT", path, map[string]string{"msgtype": "m.text", "body": "x"}); status != 200 {
				t.Fatalf("unlimited service's message %d = %d %s; want 200", i, status, data)
			}
		}
		limited := false
		anon := srv.Client(t)
		for i := 0; i < 10 && !limited; i++ {
			status, _ := anon.Raw("GET", "/_matrix/client/v3/register/available?username=someone", nil)
			limited = status == 429
		}
		if !limited {
			t.Error("anonymous requests were never limited; want 429 past the burst")
		}
	})
}

// TestThirdPartyNeedsAUser: the lookups that reach the services are for
// logged-in users only.
func TestThirdPartyNeedsAUser(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		b := newBridge(t, "tp", "tpbot", "protocols: [ymca]\n")
		srv := testserver.Start(t, d, withBridges(b))
		for _, path := range []string{"/thirdparty/protocols", "/thirdparty/protocol/ymca", "/thirdparty/location/ymca", "/thirdparty/user/ymca",
			"/thirdparty/location?alias=%23x:localhost", "/thirdparty/user?userid=@x:localhost"} {
			if status, data := srv.Client(t).Raw("GET", "/_matrix/client/v3"+path, nil); status != 401 {
				t.Errorf("anonymous GET %s = %d %s; want 401", path, status, data)
			}
		}
		if b.calls.Load() != 0 {
			t.Error("the service was called for an anonymous lookup")
		}
	})
}

// TestBrokenRegistrationStopsTheStart: a registration file with a bad field
// keeps the server from starting, and the error names the file and the field.
func TestBrokenRegistrationStopsTheStart(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "broken.yaml")
	if err := os.WriteFile(file, []byte("id: x\nurl: http://127.0.0.1:1\nas_token: a\nhs_token: h\nsender_localpart: xbot\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@x_(.*'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.AppServiceConfigFiles = []string{file}
	_, err := homeserver.New(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "namespaces.users[0].regex") {
		t.Fatalf("homeserver.New with a broken registration = %v; want an error naming %s and namespaces.users[0].regex", err, file)
	}
}
