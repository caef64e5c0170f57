package clientapi

import (
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rtc"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
)

// LiveKitServicePath is where the built-in LiveKit JWT service answers in the shape
// of Element's lk-jwt-service (POST <livekit_service_url>/sfu/get): set
// rtc.livekit_service_url to the public base URL followed by this path to use it.
const LiveKitServicePath = "/livekit/jwt"

// registerRTC adds MatrixRTC focus discovery (MSC4143) and the LiveKit token
// endpoints (MSC4195, and lk-jwt-service's /sfu/get that Element Call calls today).
func (h *handlers) registerRTC(router *mux.Router, api *httpapi.API) {
	if h.rtc == nil {
		return
	}
	v1 := httpapi.Subrouter(router, "/_matrix/client/v1")
	api.Handle(v1, http.MethodGet, "/rtc/transports", h.rtcTransportsV1, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v1, http.MethodPost, "/rtc/livekit/get_token", h.liveKitGetToken, httpapi.Authed, httpapi.GuestsAllowed, httpapi.RateLimited)
	u := httpapi.Subrouter(router, "/_matrix/client/unstable/org.matrix.msc4143")
	api.Handle(u, http.MethodGet, "/rtc/transports", h.rtcTransportsUnstable, httpapi.Authed, httpapi.GuestsAllowed)
	// The lk-jwt-service shape authenticates with an OpenID token in the body, not
	// an access token: Element Call sends it to a service that is not the homeserver.
	api.Handle(router, http.MethodPost, LiveKitServicePath+"/sfu/get", h.liveKitSFUGet, httpapi.RateLimited)
}

// rtcFoci is the rtc_foci list for /.well-known/matrix/client (nil: none).
func (h *handlers) rtcFoci() []map[string]string {
	if h.rtc == nil {
		return nil
	}
	return h.rtc.Foci()
}

func (h *handlers) rtcTransportsV1(*httpapi.Request) (any, error) {
	return map[string]any{"transports": h.rtc.Transports()}, nil
}

func (h *handlers) rtcTransportsUnstable(*httpapi.Request) (any, error) {
	foci := h.rtc.Foci()
	if foci == nil {
		foci = []map[string]string{}
	}
	return map[string]any{"rtc_transports": foci}, nil
}

// liveKitGetToken is MSC4195's POST /_matrix/client/v1/rtc/livekit/get_token.
func (h *handlers) liveKitGetToken(r *httpapi.Request) (any, error) {
	var body struct {
		ServerName string `json:"server_name"`
		URL        string `json:"url"`
		RoomID     string `json:"room_id"`
		SlotID     string `json:"slot_id"`
		MemberID   string `json:"member_id"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.URL == "" || body.RoomID == "" || body.SlotID == "" || body.MemberID == "" {
		return nil, mxerror.New(mxerror.BadJSON, "url, room_id, slot_id and member_id are required")
	}
	if body.ServerName != "" && body.ServerName != h.cfg.ServerName {
		return nil, mxerror.New(mxerror.InvalidParam, "tokens for other servers' SFUs are not supported")
	}
	if !h.rtc.Minting() || body.URL != h.rtc.URL() {
		return nil, mxerror.New(mxerror.InvalidParam, "%s is not one of this server's SFUs", body.URL)
	}
	jwt, err := h.rtc.Token(r.Context(), r.Caller.UserID, body.RoomID, body.SlotID, rtc.Pseudonym(r.Caller.UserID, body.MemberID))
	if err != nil {
		return nil, err
	}
	return map[string]string{"jwt": jwt}, nil
}

// liveKitSFUGet is lk-jwt-service's POST /sfu/get: an OpenID token this server
// issued, the room and the device in; the SFU's URL and a token out. The LiveKit
// room is the one MSC4195 names for the room's call slot, the identity
// "user:device" as lk-jwt-service makes it.
func (h *handlers) liveKitSFUGet(r *httpapi.Request) (any, error) {
	var body struct {
		Room        string `json:"room"`
		DeviceID    string `json:"device_id"`
		OpenIDToken struct {
			AccessToken      string `json:"access_token"`
			MatrixServerName string `json:"matrix_server_name"`
		} `json:"openid_token"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Room == "" || body.DeviceID == "" || body.OpenIDToken.AccessToken == "" {
		return nil, mxerror.New(mxerror.BadJSON, "room, device_id and openid_token.access_token are required")
	}
	if body.OpenIDToken.MatrixServerName != h.cfg.ServerName {
		return nil, mxerror.New(mxerror.Unauthorized, "only this server's users get tokens here")
	}
	userID, err := h.users.OpenIDUser(r.Context(), body.OpenIDToken.AccessToken)
	if err != nil {
		if errors.Is(err, users.ErrNotFound) {
			return nil, mxerror.New(mxerror.Unauthorized, "the OpenID token is unknown or expired")
		}
		return nil, err
	}
	jwt, err := h.rtc.Token(r.Context(), userID, body.Room, "m.call#ROOM", userID+":"+body.DeviceID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"url": h.rtc.URL(), "jwt": jwt}, nil
}
