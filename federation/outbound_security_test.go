package federation_test

import (
	"net"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/outbound/outboundtest"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// Without --federation-insecure a server does not send federation requests to
// a server name that is, or resolves to, a loopback or private address: not
// for profiles, not for joins, not even to another Hongyan on the same machine.
// Nothing is dialled (10.0.0.1 included), nothing is accepted.
func TestFederationRefusesInternalServers(t *testing.T) {
	t.Parallel()
	v4, v6 := outboundtest.Watch(t, "tcp4", "127.0.0.1"), outboundtest.Watch(t, "tcp6", "::1")
	_, port, _ := net.SplitHostPort(v4.Addr)
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		// A runs with federation on as usual, so it could answer; B may not reach it.
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated, func(c *config.Config) { c.Federation.InsecureSkipVerify = false })
		alice := a.Register(t, "alice", "pw")
		var created struct {
			RoomID string `json:"room_id"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "open"}, &created)
		bob := b.Register(t, "bob", "pw")
		guard := b.FederationGuard
		for _, server := range []string{"localhost:" + port, v4.Addr, v6.Addr, "10.0.0.1", "10.0.0.1:8448", a.Config.ServerName} {
			refusals := guard.Refusals()
			var e struct{ ErrCode string }
			if st := bob.Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape("@alice:"+server), nil, &e); st < 400 || st == 500 {
				t.Errorf("profile of @alice:%s = %d %s; want a 4xx/5xx other than 500", server, st, e.ErrCode)
			}
			if guard.Refusals() == refusals {
				t.Errorf("profile of @alice:%s: the guard refused nothing", server)
			}
		}
		for _, room := range []string{"#open:" + a.Config.ServerName, created.RoomID + "?server_name=" + a.Config.ServerName} {
			var e struct{ ErrCode string }
			if st := bob.Do("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, &e); st < 400 || st == 500 {
				t.Errorf("join %s = %d %s; want a 4xx/5xx other than 500", room, st, e.ErrCode)
			}
		}
		if n := guard.Dials(); n != 0 {
			t.Errorf("B's federation guard dialled %d times; want 0", n)
		}
		for _, w := range []*outboundtest.Watched{v4, v6} {
			if n := w.Accepted(t); n != 0 {
				t.Errorf("listener %s accepted %d connections; want 0", w.Addr, n)
			}
		}
	})
}

// A private deployment: with federation.allow_cidrs naming loopback and
// federation.ca_file trusting A's certificate, B reaches A without
// --federation-insecure, certificates verified.
func TestFederationAllowCIDRs(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated, func(c *config.Config) {
			c.Federation.InsecureSkipVerify = false
			c.Federation.AllowCIDRs = "127.0.0.0/8, ::1/128"
			c.Federation.CAFile = filepath.Join(a.Config.DataDir, "federation-tls.crt")
		})
		alice := a.Register(t, "alice", "pw")
		alice.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID)+"/displayname", map[string]string{"displayname": "Alice"}, nil)
		bob := b.Register(t, "bob", "pw")
		var p struct {
			DisplayName string `json:"displayname"`
		}
		if st := bob.Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID), nil, &p); st != 200 || p.DisplayName != "Alice" {
			t.Fatalf("profile over federation = %d %q; want 200 Alice", st, p.DisplayName)
		}
		if b.FederationGuard.Dials() == 0 || b.FederationGuard.Refusals() != 0 {
			t.Errorf("B's guard: %d dials, %d refusals; want some and none", b.FederationGuard.Dials(), b.FederationGuard.Refusals())
		}
	})
}
