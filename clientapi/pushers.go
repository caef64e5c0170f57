package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/pusher"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerPushers(v3 *mux.Router, api *httpapi.API) {
	api.Handle(v3, http.MethodGet, "/pushers", h.getPushers, httpapi.Authed)
	api.Handle(v3, http.MethodPost, "/pushers/set", h.setPusher, httpapi.Authed, httpapi.RateLimited)
}

func (h *handlers) getPushers(r *httpapi.Request) (any, error) {
	ps, err := h.pushers.List(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pushers": ps}, nil
}

func (h *handlers) setPusher(r *httpapi.Request) (any, error) {
	var req pusher.Set
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	return struct{}{}, h.pushers.Set(r.Context(), r.Caller.UserID, r.Caller.DeviceID, req)
}
