package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the scheme under test
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

type turnCreds struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	TTL      int64    `json:"ttl"`
}

// TestTURNServerCredentials: /voip/turnServer hands out coturn use-auth-secret
// credentials for the caller, guests included, that an HMAC of the configured
// secret verifies.
func TestTURNServerCredentials(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		var c turnCreds
		alice.MustDo("GET", "/_matrix/client/v3/voip/turnServer", nil, &c)
		exp, user, _ := strings.Cut(c.Username, ":")
		if user != alice.UserID {
			t.Fatalf("username %q does not name %s", c.Username, alice.UserID)
		}
		expiry, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || time.Until(time.Unix(expiry, 0)) < 50*time.Minute || time.Until(time.Unix(expiry, 0)) > 61*time.Minute || c.TTL != 3600 {
			t.Fatalf("expiry %q ttl %d", exp, c.TTL)
		}
		mac := hmac.New(sha1.New, []byte("turn-secret"))
		mac.Write([]byte(c.Username))
		if c.Password != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Fatalf("password %q is not HMAC-SHA1(secret, username)", c.Password)
		}
		if len(c.URIs) != 1 || c.URIs[0] != "turns:turn.example.org:5349?transport=tcp" {
			t.Fatalf("uris %v", c.URIs)
		}

		var guest struct {
			AccessToken string `json:"access_token"`
			UserID      string `json:"user_id"`
		}
		srv.Client(t).MustDo("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{}, &guest)
		var g turnCreds
		srv.Client(t).WithToken(guest.AccessToken).MustDo("GET", "/_matrix/client/v3/voip/turnServer", nil, &g)
		if !strings.HasSuffix(g.Username, ":"+guest.UserID) {
			t.Fatalf("guest username %q", g.Username)
		}
	}, func(c *config.Config) {
		c.TURN.SharedSecret = "turn-secret"
		c.TURN.URIs = []string{"turns:turn.example.org:5349?transport=tcp"}
		c.TURN.TTL = time.Hour
		c.Registration.Guests = true
	})
}

// TestTURNServerUnconfigured: with no TURN at all the answer is {}.
func TestTURNServerUnconfigured(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		var body map[string]any
		srv.Register(t, "alice", "pw").MustDo("GET", "/_matrix/client/v3/voip/turnServer", nil, &body)
		if len(body) != 0 {
			t.Fatalf("got %v, want {}", body)
		}
	}, func(c *config.Config) {
		off := false
		c.TURN.Embedded.Enabled = &off
	})
}
