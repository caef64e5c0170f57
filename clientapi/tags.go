package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerTags(v3 *mux.Router, api *httpapi.API) {
	authed := []httpapi.Option{httpapi.Authed, httpapi.GuestsAllowed}
	api.Handle(v3, http.MethodGet, "/user/{userId}/rooms/{roomId}/tags", h.tags, authed...)
	api.Handle(v3, http.MethodPut, "/user/{userId}/rooms/{roomId}/tags/{tag}", h.setTag, authed...)
	api.Handle(v3, http.MethodDelete, "/user/{userId}/rooms/{roomId}/tags/{tag}", h.deleteTag, authed...)
	api.Handle(v3, http.MethodPost, "/user_directory/search", h.searchUsers, httpapi.Authed, httpapi.RateLimited)
}

// roomTags reads the m.tag room account data, where tags live so sync delivers them.
func (h *handlers) roomTags(r *httpapi.Request) (local, roomID string, tags map[string]json.RawMessage, err error) {
	if local, roomID, err = h.accountDataTarget(r); err != nil {
		return "", "", nil, err
	}
	raw, err := h.users.AccountData(r.Context(), local, roomID, "m.tag")
	tags = map[string]json.RawMessage{}
	if errors.Is(err, users.ErrNotFound) {
		return local, roomID, tags, nil
	}
	if err != nil {
		return "", "", nil, err
	}
	var content struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if json.Unmarshal(raw, &content) == nil && content.Tags != nil {
		tags = content.Tags
	}
	return local, roomID, tags, nil
}

func (h *handlers) tags(r *httpapi.Request) (any, error) {
	_, _, tags, err := h.roomTags(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"tags": tags}, nil
}

func (h *handlers) setTag(r *httpapi.Request) (any, error) {
	local, roomID, tags, err := h.roomTags(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if order, ok := body["order"]; ok {
		var n float64
		if json.Unmarshal(order, &n) != nil || n < 0 || n > 1 {
			return nil, mxerror.New(mxerror.InvalidParam, "order must be a number between 0 and 1")
		}
	}
	tag := r.Vars["tag"]
	if len(tag) > 255 {
		return nil, mxerror.New(mxerror.InvalidParam, "tag may not be longer than 255 bytes")
	}
	tags[tag], _ = json.Marshal(body)
	content, _ := json.Marshal(map[string]any{"tags": tags})
	_, err = h.users.SetAccountData(r.Context(), local, roomID, "m.tag", content)
	return struct{}{}, err
}

func (h *handlers) deleteTag(r *httpapi.Request) (any, error) {
	local, roomID, tags, err := h.roomTags(r)
	if err != nil {
		return nil, err
	}
	delete(tags, r.Vars["tag"])
	content, _ := json.Marshal(map[string]any{"tags": tags})
	_, err = h.users.SetAccountData(r.Context(), local, roomID, "m.tag", content)
	return struct{}{}, err
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
