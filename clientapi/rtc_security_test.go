package clientapi_test

import (
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestLiveKitTokensRefuseOutsiders: no token without a valid OpenID or access token,
// none for a room the caller is not joined to, none for another SFU, and bad input
// is a Matrix error.
func TestLiveKitTokensRefuseOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		eve := srv.Register(t, "eve", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		anon := srv.Client(t)
		getToken := "/_matrix/client/v1/rtc/livekit/get_token"
		req := map[string]string{"url": lkURL, "room_id": room, "slot_id": "m.call#ROOM", "member_id": "m1"}

		wantErr(t, anon, "POST", getToken, req, 401, "M_MISSING_TOKEN")
		wantErr(t, anon, "GET", "/_matrix/client/v1/rtc/transports", nil, 401, "M_MISSING_TOKEN")
		wantErr(t, anon, "GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", nil, 401, "M_MISSING_TOKEN")
		wantErr(t, eve, "POST", getToken, req, 403, "M_FORBIDDEN")
		wantErr(t, eve, "POST", getToken, map[string]string{"url": lkURL, "room_id": "!nowhere:localhost", "slot_id": "s", "member_id": "m"}, 403, "M_FORBIDDEN")
		wantErr(t, alice, "POST", getToken, map[string]string{"url": "wss://other.example", "room_id": room, "slot_id": "s", "member_id": "m"}, 400, "M_INVALID_PARAM")
		wantErr(t, alice, "POST", getToken, map[string]string{"server_name": "other.example", "url": lkURL, "room_id": room, "slot_id": "s", "member_id": "m"}, 400, "M_INVALID_PARAM")
		wantErr(t, alice, "POST", getToken, map[string]string{"url": lkURL, "room_id": room}, 400, "M_BAD_JSON")
		wantErr(t, alice, "POST", getToken, map[string]string{"url": lkURL, "room_id": "not-a-room", "slot_id": "s", "member_id": "m"}, 400, "M_INVALID_PARAM")

		sfuGet := "/livekit/jwt/sfu/get"
		wantErr(t, anon, "POST", sfuGet, map[string]any{"room": room, "device_id": "D",
			"openid_token": map[string]string{"access_token": "forged", "matrix_server_name": "localhost"}}, 401, "M_UNAUTHORIZED")
		wantErr(t, anon, "POST", sfuGet, map[string]any{"room": room, "device_id": "D",
			"openid_token": map[string]string{"access_token": alice.Token, "matrix_server_name": "localhost"}}, 401, "M_UNAUTHORIZED") // an access token is no OpenID token
		wantErr(t, anon, "POST", sfuGet, map[string]any{"room": room, "device_id": "D",
			"openid_token": map[string]any{"access_token": openIDToken(t, alice)["access_token"], "matrix_server_name": "other.example"}}, 401, "M_UNAUTHORIZED")
		wantErr(t, anon, "POST", sfuGet, map[string]any{"room": room, "device_id": "D", "openid_token": openIDToken(t, eve)}, 403, "M_FORBIDDEN")
		wantErr(t, anon, "POST", sfuGet, map[string]any{"room": room}, 400, "M_BAD_JSON")
		wantErr(t, anon, "POST", sfuGet, "nope", 400, "M_NOT_JSON")
	}, withLiveKit)
}
