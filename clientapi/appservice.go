package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

// appServiceLogin is the login and registration type of application services.
const appServiceLogin = "m.login.application_service"

// registerAppServices adds the routes application services call besides the
// ordinary ones: the ping, and the third-party lookups clients make of them.
func (h *handlers) registerAppServices(v3, v1 *mux.Router, api *httpapi.API) {
	api.Handle(v1, http.MethodPost, "/appservice/{appserviceId}/ping", h.appServicePing, httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/thirdparty/protocols", h.thirdPartyProtocols, httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/thirdparty/protocol/{protocol}", h.thirdPartyProtocol, httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/thirdparty/location/{protocol}", h.thirdPartyLookup("location"), httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/thirdparty/user/{protocol}", h.thirdPartyLookup("user"), httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/thirdparty/location", h.thirdPartyReverse("location", "alias"), httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/thirdparty/user", h.thirdPartyReverse("user", "userid"), httpapi.Authed)
}

// assertedTS is the ts query parameter of an application service's send: the
// time the bridged message was sent. Zero (now) for anyone else, or when absent.
func assertedTS(r *httpapi.Request) time.Time {
	if r.Caller.AppService == "" {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(r.URL.Query().Get("ts"), 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// authType is the type of a user-interactive auth object, "" if none.
func authType(auth json.RawMessage) string {
	var a struct {
		Type string `json:"type"`
	}
	if len(auth) == 0 || json.Unmarshal(auth, &a) != nil {
		return ""
	}
	return a.Type
}

func (h *handlers) appServicePing(r *httpapi.Request) (any, error) {
	var req struct {
		TransactionID string `json:"transaction_id"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	if h.appservices == nil || r.Caller.AppService == "" {
		return nil, mxerror.New(mxerror.Forbidden, "only an application service may ping itself")
	}
	took, err := h.appservices.Ping(r.Context(), r.Caller.AppService, r.Vars["appserviceId"], req.TransactionID)
	if err != nil {
		return nil, err
	}
	return map[string]int64{"duration_ms": took.Milliseconds()}, nil
}

func (h *handlers) thirdPartyProtocols(r *httpapi.Request) (any, error) {
	out := map[string]json.RawMessage{}
	if h.appservices == nil {
		return out, nil
	}
	for _, p := range h.appservices.Protocols() {
		if got, ok := h.appservices.ThirdParty(r.Context(), "protocol", p, nil); ok && len(got) > 0 {
			out[p] = got[0]
		}
	}
	return out, nil
}

func (h *handlers) thirdPartyProtocol(r *httpapi.Request) (any, error) {
	p := r.Vars["protocol"]
	if h.appservices != nil {
		if got, ok := h.appservices.ThirdParty(r.Context(), "protocol", p, nil); ok && len(got) > 0 {
			return got[0], nil
		}
	}
	return nil, mxerror.New(mxerror.NotFound, "unknown protocol %s", p)
}

// thirdPartyLookup asks the services bridging the protocol for locations or
// users matching the query's fields.
func (h *handlers) thirdPartyLookup(kind string) httpapi.Handler {
	return func(r *httpapi.Request) (any, error) {
		p := r.Vars["protocol"]
		if h.appservices == nil {
			return nil, mxerror.New(mxerror.NotFound, "unknown protocol %s", p)
		}
		got, ok := h.appservices.ThirdParty(r.Context(), kind, p, r.URL.Query())
		if !ok {
			return nil, mxerror.New(mxerror.NotFound, "unknown protocol %s", p)
		}
		return got, nil
	}
}

// thirdPartyReverse looks a Matrix alias or user ID up across every service.
func (h *handlers) thirdPartyReverse(kind, param string) httpapi.Handler {
	return func(r *httpapi.Request) (any, error) {
		if r.URL.Query().Get(param) == "" {
			return nil, mxerror.New(mxerror.MissingParam, "%s is required", param)
		}
		if h.appservices == nil {
			return []any{}, nil
		}
		got, _ := h.appservices.ThirdParty(r.Context(), kind, "", r.URL.Query())
		return got, nil
	}
}
