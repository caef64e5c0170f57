package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the scheme under test
	"encoding/base64"
	"net/http"
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

// TestCallEventsValidated: a DM call's invite, answer, candidates and hangup
// reach the callee through /sync; malformed call events are M_BAD_JSON and a
// non-member cannot ring into the room.
func TestCallEventsValidated(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		mallory := srv.Register(t, "mallory", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		send := "/_matrix/client/v3/rooms/" + room + "/send/"
		base := map[string]any{"call_id": "c1", "party_id": "alice-dev", "version": "1"}
		with := func(extra map[string]any) map[string]any {
			out := map[string]any{}
			for k, v := range base {
				out[k] = v
			}
			for k, v := range extra {
				out[k] = v
			}
			return out
		}
		for i, bad := range []struct {
			typ     string
			content map[string]any
		}{
			{"m.call.invite", with(map[string]any{"offer": map[string]any{"type": "offer", "sdp": "v=0"}})},
			{"m.call.invite", map[string]any{"version": "1", "lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": "v=0"}}},
			{"m.call.answer", with(nil)},
			{"m.call.candidates", with(map[string]any{"candidates": "no"})},
			{"m.call.hangup", map[string]any{"call_id": "c1", "version": "1"}},
		} {
			wantErr(t, alice, "PUT", send+bad.typ+"/bad"+strconv.Itoa(i), bad.content, http.StatusBadRequest, "M_BAD_JSON")
		}
		invite := with(map[string]any{"lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": "v=0"}})
		wantErr(t, mallory, "PUT", send+"m.call.invite/m1", invite, http.StatusForbidden, "M_FORBIDDEN")
		alice.MustDo("PUT", send+"m.call.invite/t1", invite, nil)
		alice.MustDo("PUT", send+"m.call.candidates/t2", with(map[string]any{"candidates": []any{map[string]any{"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}}}), nil)
		bob.MustDo("PUT", send+"m.call.answer/t3", map[string]any{"call_id": "c1", "party_id": "bob-dev", "version": "1", "answer": map[string]any{"type": "answer", "sdp": "v=0"}}, nil)
		alice.MustDo("PUT", send+"m.call.hangup/t4", with(map[string]any{"reason": "user_hangup"}), nil)
		var got []string
		for _, e := range doSync(t, bob, "").Rooms.Join[room].Timeline.Events {
			if strings.HasPrefix(e.Type, "m.call.") {
				got = append(got, e.Type)
			}
		}
		if want := []string{"m.call.invite", "m.call.candidates", "m.call.answer", "m.call.hangup"}; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("bob's call events %v, want %v", got, want)
		}
	})
}
