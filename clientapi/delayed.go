package clientapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/delayed"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

// delayParam is MSC4140's query parameter on the send and state routes: present, the
// event is scheduled instead of sent and the answer is its delay_id.
const delayParam = "org.matrix.msc4140.delay"

// registerDelayed adds MSC4140's management routes. Both the original single route
// with an action in the body and the newer one route per action are served, since
// Element Call's matrix-js-sdk and other clients use one or the other.
func (h *handlers) registerDelayed(router *mux.Router, api *httpapi.API) {
	if h.delayed == nil {
		return
	}
	u := httpapi.Subrouter(router, "/_matrix/client/unstable/org.matrix.msc4140")
	api.Handle(u, http.MethodGet, "/delayed_events", h.listDelayed, httpapi.Authed)
	api.Handle(u, http.MethodPost, "/delayed_events/{delayId}", h.updateDelayed(""), httpapi.Authed, httpapi.RateLimited)
	for _, a := range []string{delayed.ActionRestart, delayed.ActionCancel, delayed.ActionSend} {
		api.Handle(u, http.MethodPost, "/delayed_events/{delayId}/"+a, h.updateDelayed(a), httpapi.Authed, httpapi.RateLimited)
	}
}

// delayRequested reports whether the request carries the delay parameter.
func delayRequested(r *httpapi.Request) bool {
	_, ok := r.URL.Query()[delayParam]
	return ok
}

// delayTxn is the transaction key of a delayed send: the device and its txnId.
func delayTxn(r *httpapi.Request) string {
	if r.Vars["txnId"] == "" {
		return ""
	}
	return r.Caller.DeviceID + "/" + r.Vars["txnId"]
}

// scheduleDelayed schedules the event a send or state request carries.
func (h *handlers) scheduleDelayed(r *httpapi.Request, req delayed.Request) (any, error) {
	if h.delayed == nil {
		return nil, mxerror.New(mxerror.Unrecognized, "delayed events are not enabled")
	}
	ms, err := strconv.ParseInt(r.URL.Query().Get(delayParam), 10, 64)
	if err != nil || ms < 0 {
		return nil, mxerror.New(mxerror.InvalidParam, "%s must be a non-negative number of milliseconds", delayParam)
	}
	if ms > int64(365*24*time.Hour/time.Millisecond) {
		return nil, mxerror.New(mxerror.InvalidParam, "%s is too large", delayParam)
	}
	req.UserID, req.DeviceID, req.Delay = r.Caller.UserID, r.Caller.DeviceID, time.Duration(ms)*time.Millisecond
	id, err := h.delayed.Schedule(r.Context(), req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"delay_id": id}, nil
}

func (h *handlers) listDelayed(r *httpapi.Request) (any, error) {
	evs, err := h.delayed.List(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	// delayed_events is Synapse's answer today; scheduled is the MSC's newer name.
	return map[string]any{"delayed_events": evs, "scheduled": evs}, nil
}

func (h *handlers) updateDelayed(action string) httpapi.Handler {
	return func(r *httpapi.Request) (any, error) {
		a := action
		if a == "" {
			var body struct {
				Action string `json:"action"`
			}
			if err := r.Decode(&body); err != nil {
				return nil, err
			}
			a = body.Action
		}
		if err := h.delayed.Update(r.Context(), r.Caller.UserID, r.Vars["delayId"], a); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}
