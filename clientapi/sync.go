package clientapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/clientsync"
	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

// maxSyncTimeout bounds how long one /sync may hold a connection.
const maxSyncTimeout = 5 * time.Minute

func (h *handlers) registerSync(router, v3 *mux.Router, api *httpapi.API) {
	api.Handle(v3, http.MethodGet, "/sync", h.syncHandler, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodGet, "/events", h.eventStream, httpapi.Authed, httpapi.GuestsAllowed)
	// Simplified sliding sync (MSC4186), under the prefix Element X and Synapse use.
	api.Handle(router, http.MethodPost, "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", h.slidingSync, httpapi.Authed)
}

// parseTimeout reads the timeout parameter in milliseconds.
func parseTimeout(t string) (time.Duration, error) {
	if t == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(t, 10, 64)
	if err != nil || ms < 0 {
		return 0, mxerror.New(mxerror.InvalidParam, "timeout must be a non-negative integer of milliseconds")
	}
	return min(time.Duration(ms)*time.Millisecond, maxSyncTimeout), nil
}

func parseSetPresence(p string) (string, error) {
	switch p {
	case "", "online", "offline", "unavailable":
		return p, nil
	}
	return "", mxerror.New(mxerror.InvalidParam, "set_presence must be online, offline or unavailable")
}

func (h *handlers) slidingSync(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	req := clientsync.SlidingRequest{UserID: r.Caller.UserID, Localpart: r.Caller.Localpart, DeviceID: r.Caller.DeviceID, Pos: q.Get("pos")}
	var err error
	if req.Timeout, err = parseTimeout(q.Get("timeout")); err != nil {
		return nil, err
	}
	if req.SetPresence, err = parseSetPresence(q.Get("set_presence")); err != nil {
		return nil, err
	}
	if err := r.Decode(&req.Body); err != nil {
		return nil, err
	}
	return h.syncer.SlidingSync(r.Context(), req)
}

// pollRequest reads what /sync and /events share: the caller, the token to go on
// from (in the since or from parameter) and the long-poll timeout.
func pollRequest(r *httpapi.Request, tokenParam string) (clientsync.Request, error) {
	q := r.URL.Query()
	req := clientsync.Request{UserID: r.Caller.UserID, Localpart: r.Caller.Localpart, DeviceID: r.Caller.DeviceID}
	if since := q.Get(tokenParam); since != "" {
		tok, err := clientsync.ParseToken(since)
		if err != nil {
			return req, err
		}
		req.Since = &tok
	}
	var err error
	req.Timeout, err = parseTimeout(q.Get("timeout"))
	return req, err
}

func (h *handlers) syncHandler(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	req, err := pollRequest(r, "since")
	if err != nil {
		return nil, err
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "full_state must be true or false")
	}
	if req.SetPresence, err = parseSetPresence(q.Get("set_presence")); err != nil {
		return nil, err
	}
	f, err := h.syncer.ParseFilter(r.Context(), r.Caller.Localpart, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.Filter = f
	return h.syncer.Sync(r.Context(), req)
}

// eventStream is the legacy GET /events (deprecated, kept for older clients and
// Sytest): from, timeout and room_id, answered from the sync machinery.
func (h *handlers) eventStream(r *httpapi.Request) (any, error) {
	req, err := pollRequest(r, "from")
	if err != nil {
		return nil, err
	}
	if room := r.URL.Query().Get("room_id"); room != "" {
		req.Filter.Room = &filter.RoomFilter{Rooms: &[]string{room}}
	}
	return h.syncer.Events(r.Context(), req)
}
