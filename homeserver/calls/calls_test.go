package calls_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the scheme under test
	"encoding/base64"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/hongyan/hongyan/homeserver/calls"
	"github.com/hongyan/hongyan/homeserver/config"
)

func testConfig(t *testing.T, quota int) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.TURN.SharedSecret = "s3cret"
	cfg.TURN.Embedded.UserQuota = quota
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestCredentialsAreCoturnRESTCredentials: the username is expiry:userID and
// the password base64(HMAC-SHA1(secret, username)), what coturn's
// use-auth-secret checks.
func TestCredentialsAreCoturnRESTCredentials(t *testing.T) {
	cfg := testConfig(t, 10)
	now := time.Unix(1_800_000_000, 0)
	c := calls.New(cfg).Credentials("@alice:localhost", now)
	exp, user, _ := strings.Cut(c.Username, ":")
	if user != "@alice:localhost" || exp != strconv.FormatInt(now.Add(24*time.Hour).Unix(), 10) {
		t.Fatalf("username %q", c.Username)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(c.Username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); c.Password != want {
		t.Fatalf("password %q, want %q", c.Password, want)
	}
	if c.TTL != 86400 || len(c.URIs) != 1 || c.URIs[0] != "turn:127.0.0.1:3478?transport=udp" {
		t.Fatalf("ttl %d uris %v", c.TTL, c.URIs)
	}
}

func startTURN(t *testing.T, cfg config.Config) (*calls.Service, *calls.TURNServer) {
	t.Helper()
	svc := calls.New(cfg)
	srv, err := svc.StartTURN(context.Background(), cfg, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return svc, srv
}

// dial makes a TURN client of the server with username and password.
func dial(t *testing.T, srv *calls.TURNServer, username, password string) *turn.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: srv.Addr().String(), TURNServerAddr: srv.Addr().String(),
		Username: username, Password: password, Realm: calls.Realm, Conn: conn, RTO: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c
}

// TestTURNRefusesForgedAndExpiredCredentials: only credentials the server
// issued, and only until they expire, get an allocation.
func TestTURNRefusesForgedAndExpiredCredentials(t *testing.T) {
	cfg := testConfig(t, 10)
	svc, srv := startTURN(t, cfg)
	good := svc.Credentials("@alice:localhost", time.Now())
	expiredName := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10) + ":@alice:localhost"
	tests := []struct {
		name, username, password string
		ok                       bool
	}{
		{"issued", good.Username, good.Password, true},
		{"wrong password", good.Username, calls.Password("other secret", good.Username), false},
		{"user swapped", strings.Replace(good.Username, "@alice", "@mallory", 1), good.Password, false},
		{"expired, correctly signed", expiredName, calls.Password("s3cret", expiredName), false},
		{"not expiry:user", "@alice:localhost", calls.Password("s3cret", "@alice:localhost"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, srv, tt.username, tt.password)
			relay, err := c.Allocate()
			if (err == nil) != tt.ok {
				t.Fatalf("allocate: err %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				relay.Close()
			}
		})
	}
}

// TestTURNUserQuota: a user's allocations beyond turn.embedded.user_quota are
// refused, whatever credential they use; another user is not affected.
func TestTURNUserQuota(t *testing.T) {
	cfg := testConfig(t, 2)
	svc, srv := startTURN(t, cfg)
	for i := 0; i < 2; i++ {
		cr := svc.Credentials("@alice:localhost", time.Now().Add(time.Duration(i)*time.Second))
		if _, err := dial(t, srv, cr.Username, cr.Password).Allocate(); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	if n := srv.Allocations("@alice:localhost"); n != 2 {
		t.Fatalf("alice holds %d allocations, want 2", n)
	}
	cr := svc.Credentials("@alice:localhost", time.Now().Add(time.Hour))
	if _, err := dial(t, srv, cr.Username, cr.Password).Allocate(); err == nil {
		t.Fatal("third allocation accepted beyond a quota of 2")
	}
	bob := svc.Credentials("@bob:localhost", time.Now())
	if _, err := dial(t, srv, bob.Username, bob.Password).Allocate(); err != nil {
		t.Fatalf("bob refused because of alice's quota: %v", err)
	}
}

// TestTURNRefusesPrivatePeers: the permission handler refuses CreatePermission
// for private peers, so nothing is ever relayed there (no packet is sent to the
// peer: the refusal is the server's answer to the permission request).
func TestTURNRefusesPrivatePeers(t *testing.T) {
	cfg := testConfig(t, 10)
	svc, srv := startTURN(t, cfg)
	cr := svc.Credentials("@alice:localhost", time.Now())
	c := dial(t, srv, cr.Username, cr.Password)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	for _, peer := range []string{"10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254", "fd00::1"} {
		if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(peer), Port: 5000}); err == nil {
			t.Errorf("permission to %s granted", peer)
		}
	}
	// The server's own relay address (127.0.0.1 here) is allowed: two clients
	// of one server on a loopback quick start reach each other.
	if err := c.CreatePermission(relay.LocalAddr()); err != nil {
		t.Errorf("permission to own relay %s refused: %v", relay.LocalAddr(), err)
	}
}

func TestPeerFilter(t *testing.T) {
	f := calls.PeerFilter{Relay: netip.MustParseAddr("198.18.0.7"), Allow: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}
	for peer, want := range map[string]bool{
		"8.8.8.8": true, "2001:4860::1": true, "198.18.0.7": true, "10.9.1.1": true,
		"10.1.1.1": false, "127.0.0.1": false, "::1": false, "169.254.169.254": false, "192.168.0.1": false,
		"0.0.0.0": false, "224.0.0.1": false, "fe80::1": false, "::ffff:10.1.1.1": false,
	} {
		if got := f.Allowed(net.ParseIP(peer)); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", peer, got, want)
		}
	}
}
