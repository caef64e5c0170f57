package clientapi

import (
	"encoding/json"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerEphemeral(v3 *mux.Router, api *httpapi.API) {
	api.Handle(v3, http.MethodPut, "/rooms/{roomId}/typing/{userId}", h.setTyping, httpapi.Authed, httpapi.GuestsAllowed, httpapi.RateLimited)
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", h.receipt, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/read_markers", h.readMarkers, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodGet, "/presence/{userId}/status", h.presenceStatus, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPut, "/presence/{userId}/status", h.setPresenceStatus, httpapi.Authed, httpapi.GuestsAllowed, httpapi.RateLimited)
}

func (h *handlers) presenceStatus(r *httpapi.Request) (any, error) {
	userID := r.Vars["userId"]
	if _, err := spec.NewUserID(userID, false); err != nil {
		return nil, mxerror.New(mxerror.InvalidParam, "%q is not a user ID", userID)
	}
	// A stranger is refused before anything about the user is looked up.
	st, err := h.presence.GetFor(r.Context(), r.Caller.UserID, userID)
	if err != nil {
		return nil, err
	}
	// Other servers' users: what their servers last told us (m.presence EDUs), or
	// nothing if they never did.
	if _, local := h.users.LocalpartOf(userID); !local && st.StreamPos == 0 {
		return nil, mxerror.New(mxerror.NotFound, "no presence known for %s", userID)
	}
	return st, nil
}

func (h *handlers) setPresenceStatus(r *httpapi.Request) (any, error) {
	if r.Vars["userId"] != r.Caller.UserID {
		return nil, mxerror.New(mxerror.Forbidden, "cannot set another user's presence")
	}
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Presence == "" {
		return nil, mxerror.New(mxerror.MissingParam, "presence is required")
	}
	return struct{}{}, h.presence.Set(r.Context(), r.Caller.UserID, body.Presence, body.StatusMsg)
}

// joinedRoom returns the room ID if the caller is joined to it.
func (h *handlers) joinedRoom(r *httpapi.Request) (string, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return "", err
	}
	return roomID, h.rooms.RequireJoined(r.Context(), roomID, r.Caller.UserID)
}

func (h *handlers) setTyping(r *httpapi.Request) (any, error) {
	if r.Vars["userId"] != r.Caller.UserID {
		return nil, mxerror.New(mxerror.Forbidden, "cannot set another user's typing state")
	}
	roomID, err := h.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Typing  *bool `json:"typing"`
		Timeout int64 `json:"timeout"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, mxerror.New(mxerror.MissingParam, "typing is required")
	}
	return struct{}{}, h.typing.Set(roomID, r.Caller.UserID, *body.Typing, time.Duration(body.Timeout)*time.Millisecond)
}

// markRead records a receipt or the fully-read marker for an event the caller can see.
func (h *handlers) markRead(r *httpapi.Request, roomID, typ, eventID, threadID string) error {
	if _, err := h.rooms.Event(r.Context(), roomID, r.Caller.UserID, eventID); err != nil {
		return err
	}
	if typ == "m.fully_read" {
		content, _ := json.Marshal(map[string]string{"event_id": eventID})
		_, err := h.users.SetAccountData(r.Context(), r.Caller.Localpart, roomID, "m.fully_read", content)
		return err
	}
	return h.receipts.Put(r.Context(), roomID, r.Caller.UserID, typ, threadID, eventID)
}

func (h *handlers) receipt(r *httpapi.Request) (any, error) {
	roomID, err := h.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	typ := r.Vars["receiptType"]
	if !receipts.Types[typ] && typ != "m.fully_read" {
		return nil, mxerror.New(mxerror.InvalidParam, "unknown receipt type %q", typ)
	}
	var body struct {
		ThreadID string `json:"thread_id"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	return struct{}{}, h.markRead(r, roomID, typ, r.Vars["eventId"], body.ThreadID)
}

func (h *handlers) readMarkers(r *httpapi.Request) (any, error) {
	roomID, err := h.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	var body map[string]string
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	for _, typ := range []string{"m.fully_read", "m.read", "m.read.private"} {
		if id := body[typ]; id != "" {
			if err := h.markRead(r, roomID, typ, id, ""); err != nil {
				return nil, err
			}
		}
	}
	return struct{}{}, nil
}
