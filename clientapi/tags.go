package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerTags(v3 *mux.Router, api *httpapi.API) {
	authed := []httpapi.Option{httpapi.Authed, httpapi.GuestsAllowed}
	api.Handle(v3, http.MethodGet, "/user/{userId}/rooms/{roomId}/tags", h.tags, authed...)
	api.Handle(v3, http.MethodPut, "/user/{userId}/rooms/{roomId}/tags/{tag}", h.setTag, authed...)
	api.Handle(v3, http.MethodDelete, "/user/{userId}/rooms/{roomId}/tags/{tag}", h.deleteTag, authed...)
	api.Handle(v3, http.MethodPost, "/user_directory/search", h.searchUsers, httpapi.Authed, httpapi.RateLimited)
}

func (h *handlers) tags(r *httpapi.Request) (any, error) {
	local, roomID, err := h.accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	tags, err := h.users.RoomTags(r.Context(), local, roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"tags": tags}, nil
}

func (h *handlers) setTag(r *httpapi.Request) (any, error) {
	local, roomID, err := h.accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	return struct{}{}, h.users.SetRoomTag(r.Context(), local, roomID, r.Vars["tag"], body)
}

func (h *handlers) deleteTag(r *httpapi.Request) (any, error) {
	local, roomID, err := h.accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, h.users.DeleteRoomTag(r.Context(), local, roomID, r.Vars["tag"])
}

func (h *handlers) searchUsers(r *httpapi.Request) (any, error) {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      int     `json:"limit"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.SearchTerm == nil {
		return nil, mxerror.New(mxerror.MissingParam, "search_term is required")
	}
	limit := body.Limit
	if limit <= 0 || limit > 50 {
		limit = 10
	}
	return h.directory.Search(r.Context(), r.Caller.UserID, *body.SearchTerm, limit)
}
