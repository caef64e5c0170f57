package clientapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerRoomReads(v3, v1 *mux.Router, api *httpapi.API) {
	authed := []httpapi.Option{httpapi.Authed, httpapi.GuestsAllowed}
	api.Handle(v3, http.MethodGet, "/publicRooms", h.publicRooms, httpapi.OptionalAuth)
	api.Handle(v3, http.MethodPost, "/publicRooms", h.publicRooms, httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/context/{eventId}", h.eventContext, authed...)
	for _, p := range []string{"/rooms/{roomId}/relations/{eventId}", "/rooms/{roomId}/relations/{eventId}/{relType}",
		"/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}"} {
		api.Handle(v1, http.MethodGet, p, h.relations, authed...)
	}
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/report/{eventId}", h.report, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/report", h.report, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v1, http.MethodGet, "/rooms/{roomId}/timestamp_to_event", h.timestampToEvent, authed...)
	api.Handle(v1, http.MethodGet, "/rooms/{roomId}/threads", h.threads, authed...)
	api.Handle(v1, http.MethodGet, "/rooms/{roomId}/hierarchy", h.hierarchy, authed...)
	// Anonymous callers may ask too (the spec allows it for discoverable rooms),
	// rate-limited: a summary of a room held elsewhere costs a federation request.
	api.Handle(v1, http.MethodGet, "/room_summary/{roomIdOrAlias}", h.roomSummary, httpapi.OptionalAuth, httpapi.RateLimited)
	api.Handle(v1, http.MethodGet, "/mutual_rooms", h.mutualRooms, httpapi.Authed, httpapi.RateLimited)
}

func (h *handlers) roomSummary(r *httpapi.Request) (any, error) {
	target := r.Vars["roomIdOrAlias"]
	if !strings.HasPrefix(target, "!") && !strings.HasPrefix(target, "#") {
		return nil, mxerror.New(mxerror.InvalidParam, "%q is neither a room ID nor an alias", target)
	}
	// Caller.UserID is "" for an anonymous caller.
	return h.rooms.PreviewRoom(r.Context(), target, r.Caller.UserID, r.URL.Query()["via"])
}

// mutualRoomsPage bounds one page of /mutual_rooms.
const mutualRoomsPage = 100

func (h *handlers) mutualRooms(r *httpapi.Request) (any, error) {
	other := r.URL.Query().Get("user_id")
	if other == "" {
		return nil, mxerror.New(mxerror.MissingParam, "user_id is required")
	}
	if _, err := spec.NewUserID(other, false); err != nil || other == r.Caller.UserID {
		return nil, mxerror.New(mxerror.InvalidParam, "user_id must be another user's ID")
	}
	from := r.URL.Query().Get("from")
	if from != "" && rooms.CheckRoomID(from) != nil {
		return nil, mxerror.New(mxerror.InvalidParam, "invalid from token")
	}
	joined, total, err := h.rooms.MutualRooms(r.Context(), r.Caller.UserID, other, from, mutualRoomsPage)
	if err != nil {
		return nil, err
	}
	res := map[string]any{"joined": joined, "count": total}
	if len(joined) == mutualRoomsPage {
		// The token is the last room ID given: pages stay consistent as rooms are
		// joined and left between requests.
		res["next_batch"] = joined[len(joined)-1]
	}
	return res, nil
}

func (h *handlers) hierarchy(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	q := rooms.HierarchyQuery{From: r.URL.Query().Get("from")}
	if q.Limit, err = intParam(r, "limit"); err != nil {
		return nil, err
	}
	if q.MaxDepth, err = intParam(r, "max_depth"); err != nil {
		return nil, err
	}
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		q.SuggestedOnly = true
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "suggested_only must be true or false")
	}
	return h.rooms.SpaceHierarchy(r.Context(), roomID, r.Caller.UserID, q)
}

func (h *handlers) threads(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	limit, err := intParam(r, "limit")
	if err != nil {
		return nil, err
	}
	var participated bool
	switch r.URL.Query().Get("include") {
	case "", "all":
	case "participated":
		participated = true
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "include must be all or participated")
	}
	return h.rooms.ThreadRoots(r.Context(), roomID, r.Caller.UserID, participated, r.URL.Query().Get("from"), limit)
}

// intParam reads an optional non-negative integer query parameter.
func intParam(r *httpapi.Request, name string) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, mxerror.New(mxerror.InvalidParam, "%s must be a non-negative integer", name)
	}
	return n, nil
}

func (h *handlers) publicRooms(r *httpapi.Request) (any, error) {
	var body struct {
		Limit  int    `json:"limit"`
		Since  string `json:"since"`
		Server string `json:"server"`
		Filter struct {
			GenericSearchTerm string `json:"generic_search_term"`
		} `json:"filter"`
	}
	if r.Method == http.MethodPost {
		if err := r.Decode(&body); err != nil {
			return nil, err
		}
	} else {
		n, err := intParam(r, "limit")
		if err != nil {
			return nil, err
		}
		body.Limit, body.Since, body.Server = n, r.URL.Query().Get("since"), r.URL.Query().Get("server")
	}
	server := r.URL.Query().Get("server")
	if server == "" {
		server = body.Server
	}
	if server != "" && server != h.cfg.ServerName {
		return h.rooms.RemotePublicRooms(r.Context(), server, body.Limit, body.Since, body.Filter.GenericSearchTerm)
	}
	return h.rooms.PublicRoomList(r.Context(), body.Filter.GenericSearchTerm, body.Limit, body.Since)
}

func (h *handlers) eventContext(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	limit, err := intParam(r, "limit")
	if err != nil {
		return nil, err
	}
	var q rooms.MessagesQuery
	if q.Filter, err = filter.ParseRoomEventFilter(r.URL.Query().Get("filter")); err != nil {
		return nil, err
	}
	return h.rooms.EventContext(r.Context(), roomID, r.Caller.UserID, r.Vars["eventId"], limit, q)
}

func (h *handlers) relations(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	limit, err := intParam(r, "limit")
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	rq := rooms.RelationsQuery{RelType: r.Vars["relType"], EventType: r.Vars["eventType"], From: q.Get("from"), To: q.Get("to"), Limit: limit, Backward: true}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		rq.Backward = false
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "dir must be b or f")
	}
	return h.rooms.RelationsOf(r.Context(), roomID, r.Caller.UserID, r.Vars["eventId"], rq)
}

func (h *handlers) report(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Reason string `json:"reason"`
		Score  *int64 `json:"score"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	return struct{}{}, h.rooms.Report(r.Context(), roomID, r.Caller.UserID, r.Vars["eventId"], body.Reason, body.Score)
}

func (h *handlers) timestampToEvent(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return nil, mxerror.New(mxerror.InvalidParam, "ts must be a timestamp in milliseconds")
	}
	var forward bool
	switch q.Get("dir") {
	case "f":
		forward = true
	case "b":
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "dir must be b or f")
	}
	id, at, err := h.rooms.EventAtTime(r.Context(), roomID, r.Caller.UserID, ts, forward)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": id, "origin_server_ts": at}, nil
}
