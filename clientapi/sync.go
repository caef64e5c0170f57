package clientapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/sync"
	"github.com/hongyan/hongyan/httpapi"
)

// maxSyncTimeout bounds how long one /sync may hold a connection.
const maxSyncTimeout = 5 * time.Minute

func (h *handlers) registerSync(v3 *mux.Router, api *httpapi.API) {
	api.Handle(v3, http.MethodGet, "/sync", h.syncHandler, httpapi.Authed, httpapi.GuestsAllowed)
}

func (h *handlers) syncHandler(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	req := sync.Request{UserID: r.Caller.UserID, Localpart: r.Caller.Localpart, DeviceID: r.Caller.DeviceID}
	if since := q.Get("since"); since != "" {
		tok, err := sync.ParseToken(since)
		if err != nil {
			return nil, err
		}
		req.Since = &tok
	}
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxerror.New(mxerror.InvalidParam, "timeout must be a non-negative integer of milliseconds")
		}
		req.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "full_state must be true or false")
	}
	switch req.SetPresence = q.Get("set_presence"); req.SetPresence {
	case "", "online", "offline", "unavailable":
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "set_presence must be online, offline or unavailable")
	}
	f, err := h.syncer.ParseFilter(r.Context(), r.Caller.Localpart, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.Filter = f
	return h.syncer.Sync(r.Context(), req)
}
