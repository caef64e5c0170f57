package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerNotifications(v3 *mux.Router, api *httpapi.API) {
	api.Handle(v3, http.MethodGet, "/notifications", h.notifications, httpapi.Authed, httpapi.GuestsAllowed)
}

// notificationEntry is one entry of GET /notifications.
type notificationEntry struct {
	Actions []json.RawMessage `json:"actions"`
	Event   any               `json:"event"`
	// ProfileTag is the tag of the pusher rule set that matched; rule sets
	// other than global are not supported, so it is always null.
	ProfileTag *string `json:"profile_tag"`
	Read       bool    `json:"read"`
	RoomID     string  `json:"room_id"`
	TS         int64   `json:"ts"`
}

// notifications lists the caller's notifications, newest first. Each event is
// read through the visibility filter for the caller: one they may no longer see
// is left out.
func (h *handlers) notifications(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, mxerror.New(mxerror.InvalidParam, "limit must be a non-negative integer")
		}
		limit = n
	}
	only := q.Get("only")
	if only != "" && only != "highlight" {
		return nil, mxerror.New(mxerror.InvalidParam, "only must be \"highlight\"")
	}
	page, err := h.push.List(r.Context(), r.Caller.UserID, q.Get("from"), limit, only == "highlight")
	if err != nil {
		return nil, err
	}
	out := struct {
		NextToken     string              `json:"next_token,omitempty"`
		Notifications []notificationEntry `json:"notifications"`
	}{NextToken: page.Next, Notifications: []notificationEntry{}}
	for _, n := range page.Notifications {
		ev, err := h.rooms.Event(r.Context(), n.RoomID, r.Caller.UserID, n.EventID)
		if err != nil {
			var me *mxerror.Error
			if errors.As(err, &me) {
				continue // not visible to the caller (any more)
			}
			return nil, err
		}
		actions := n.Actions
		if actions == nil {
			actions = []json.RawMessage{}
		}
		out.Notifications = append(out.Notifications, notificationEntry{Actions: actions, Event: ev, Read: n.Read, RoomID: n.RoomID, TS: n.TS})
	}
	return out, nil
}
