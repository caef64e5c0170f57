package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/rtc"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

const (
	lkKey     = "devkey"
	lkSecret  = "a-test-secret-that-is-long-enough-for-livekit"
	lkURL     = "wss://sfu.localhost"
	lkService = "https://localhost/livekit/jwt"
)

func withLiveKit(c *config.Config) {
	c.RTC = config.RTC{LiveKitServiceURL: lkService, LiveKitURL: lkURL, LiveKitAPIKey: lkKey, LiveKitAPISecret: lkSecret}
}

type lkClaims struct {
	jwt.RegisteredClaims
	Video rtc.Grant `json:"video"`
}

// parseLiveKit verifies a token as LiveKit's server does (HS256 with the API secret,
// issuer the API key, within nbf/exp) and returns its claims.
func parseLiveKit(t *testing.T, token string) lkClaims {
	t.Helper()
	var c lkClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return []byte(lkSecret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer(lkKey), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("LiveKit token does not verify: %v", err)
	}
	if c.NotBefore == nil {
		t.Fatalf("LiveKit token has no nbf")
	}
	return c
}

func openIDToken(t *testing.T, c *testserver.Client) map[string]any {
	t.Helper()
	var tok map[string]any
	c.MustDo("POST", "/_matrix/client/v3/user/"+url.PathEscape(c.UserID)+"/openid/request_token", map[string]any{}, &tok)
	return tok
}

// TestRTCDiscovery: rtc_foci in the well-known and both /rtc/transports shapes come
// from the config, and nothing is advertised when it is empty.
func TestRTCDiscovery(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		var wk map[string]any
		alice.MustDo("GET", "/.well-known/matrix/client", nil, &wk)
		foci, _ := wk["org.matrix.msc4143.rtc_foci"].([]any)
		if len(foci) != 1 || foci[0].(map[string]any)["type"] != "livekit" || foci[0].(map[string]any)["livekit_service_url"] != lkService {
			t.Fatalf("well-known = %v; want one livekit focus at %s", wk, lkService)
		}
		var unstable struct {
			RTCTransports []map[string]string `json:"rtc_transports"`
		}
		alice.MustDo("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", nil, &unstable)
		if len(unstable.RTCTransports) != 1 || unstable.RTCTransports[0]["livekit_service_url"] != lkService {
			t.Fatalf("unstable transports = %v", unstable)
		}
		var v1 struct {
			Transports []map[string]string `json:"transports"`
		}
		alice.MustDo("GET", "/_matrix/client/v1/rtc/transports", nil, &v1)
		if len(v1.Transports) != 1 || v1.Transports[0]["type"] != "m.livekit" || v1.Transports[0]["url"] != lkURL {
			t.Fatalf("v1 transports = %v", v1)
		}
	}, withLiveKit)

	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		var wk map[string]any
		alice.MustDo("GET", "/.well-known/matrix/client", nil, &wk)
		if _, ok := wk["org.matrix.msc4143.rtc_foci"]; ok {
			t.Fatalf("well-known without config = %v; want no rtc_foci", wk)
		}
		var v1 struct {
			Transports []map[string]string `json:"transports"`
		}
		alice.MustDo("GET", "/_matrix/client/v1/rtc/transports", nil, &v1)
		if len(v1.Transports) != 0 {
			t.Fatalf("v1 transports without config = %v; want none", v1)
		}
	})
}

// TestLiveKitTokens: a joined member gets a token that LiveKit's verifier accepts,
// for the room MSC4195 names and the member's identity, by both routes.
func TestLiveKitTokens(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{})

		var out map[string]string
		alice.MustDo("POST", "/_matrix/client/v1/rtc/livekit/get_token", map[string]string{
			"server_name": "localhost", "url": lkURL, "room_id": room, "slot_id": "m.call#ROOM", "member_id": "m1"}, &out)
		c := parseLiveKit(t, out["jwt"])
		if c.Subject != rtc.Pseudonym(alice.UserID, "m1") || c.Video.Room != rtc.Pseudonym(room, "m.call#ROOM") ||
			!c.Video.RoomJoin || c.Video.RoomCreate || !c.Video.CanSubscribe || !c.Video.CanPublish {
			t.Fatalf("get_token claims = %+v", c)
		}

		alice.MustDo("POST", "/livekit/jwt/sfu/get", map[string]any{"room": room, "device_id": alice.Device, "openid_token": openIDToken(t, alice)}, &out)
		if out["url"] != lkURL {
			t.Fatalf("sfu/get url = %q; want %q", out["url"], lkURL)
		}
		c = parseLiveKit(t, out["jwt"])
		if c.Subject != alice.UserID+":"+alice.Device || c.Video.Room != rtc.Pseudonym(room, "m.call#ROOM") || !c.Video.RoomJoin {
			t.Fatalf("sfu/get claims = %+v", c)
		}
	}, withLiveKit)
}
