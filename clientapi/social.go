package clientapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/social"
	"github.com/hongyan/hongyan/httpapi"
)

// registerSocial mounts the IM API (friends and groups, docs/im-api.md) under
// /_matrix/client/unstable/im.hongyan. Each handler decodes, calls
// homeserver/social and encodes; the rules are the core's.
func (h *handlers) registerSocial(router *mux.Router, api *httpapi.API) {
	if h.social == nil {
		return
	}
	im := httpapi.Subrouter(router, "/_matrix/client/unstable/im.hongyan")
	api.Handle(im, http.MethodPost, "/friends/requests", h.friendRequest, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodGet, "/friends/requests", h.friendRequests, httpapi.Authed)
	api.Handle(im, http.MethodPost, "/friends/requests/{userId}/{action:(?:accept|decline|cancel)}", h.answerFriendRequest, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodGet, "/friends", h.friends, httpapi.Authed)
	api.Handle(im, http.MethodDelete, "/friends/{userId}", h.removeFriend, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodGet, "/blocked", h.blocked, httpapi.Authed)
	api.Handle(im, http.MethodPost, "/blocked/{userId}", h.block, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodDelete, "/blocked/{userId}", h.unblock, httpapi.Authed, httpapi.RateLimited)

	api.Handle(im, http.MethodPost, "/groups", h.createGroup, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodGet, "/groups", h.groups, httpapi.Authed)
	api.Handle(im, http.MethodGet, "/groups/{roomId}/members", h.groupMembers, httpapi.Authed)
	api.Handle(im, http.MethodPost, "/groups/{roomId}/invite", h.groupInvite, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodPost, "/groups/{roomId}/join", h.groupJoin, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodPost, "/groups/{roomId}/leave", h.groupLeave, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodPost, "/groups/{roomId}/kick", h.groupKick, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodPost, "/groups/{roomId}/transfer", h.groupTransfer, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodPut, "/groups/{roomId}", h.groupUpdate, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodPut, "/groups/{roomId}/mute", h.groupMute, httpapi.Authed, httpapi.RateLimited)
	api.Handle(im, http.MethodPost, "/groups/{roomId}/dissolve", h.groupDissolve, httpapi.Authed, httpapi.RateLimited)
}

type userBody struct {
	UserID  string `json:"user_id"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

func (h *handlers) friendRequest(r *httpapi.Request) (any, error) {
	var body userBody
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	return h.social.RequestFriend(r.Context(), r.Caller.UserID, body.UserID, body.Message)
}

func (h *handlers) friendRequests(r *httpapi.Request) (any, error) {
	return h.social.Requests(r.Context(), r.Caller.UserID)
}

func (h *handlers) answerFriendRequest(r *httpapi.Request) (any, error) {
	other, me := r.Vars["userId"], r.Caller.UserID
	switch r.Vars["action"] {
	case "accept":
		roomID, err := h.social.Accept(r.Context(), me, other)
		if err != nil {
			return nil, err
		}
		return map[string]string{"room_id": roomID}, nil
	case "decline":
		return struct{}{}, h.social.Decline(r.Context(), me, other)
	default:
		return struct{}{}, h.social.Cancel(r.Context(), me, other)
	}
}

func (h *handlers) friends(r *httpapi.Request) (any, error) {
	fs, err := h.social.Friends(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"friends": fs}, nil
}

func (h *handlers) removeFriend(r *httpapi.Request) (any, error) {
	return struct{}{}, h.social.RemoveFriend(r.Context(), r.Caller.UserID, r.Vars["userId"])
}

func (h *handlers) blocked(r *httpapi.Request) (any, error) {
	list, err := h.social.Blocked(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"blocked": list}, nil
}

func (h *handlers) block(r *httpapi.Request) (any, error) {
	return struct{}{}, h.social.Block(r.Context(), r.Caller.UserID, r.Vars["userId"])
}

func (h *handlers) unblock(r *httpapi.Request) (any, error) {
	return struct{}{}, h.social.Unblock(r.Context(), r.Caller.UserID, r.Vars["userId"])
}

func (h *handlers) createGroup(r *httpapi.Request) (any, error) {
	var body struct {
		Name    string   `json:"name"`
		Members []string `json:"members"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	roomID, err := h.social.CreateGroup(r.Context(), r.Caller.UserID, body.Name, body.Members)
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

func (h *handlers) groups(r *httpapi.Request) (any, error) {
	gs, err := h.social.Groups(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"groups": gs}, nil
}

func (h *handlers) groupMembers(r *httpapi.Request) (any, error) {
	ms, err := h.social.GroupMembers(r.Context(), r.Caller.UserID, r.Vars["roomId"])
	if err != nil {
		return nil, err
	}
	return map[string]any{"members": ms}, nil
}

// groupUser decodes a {user_id} body, which is required.
func groupUser(r *httpapi.Request) (userBody, error) {
	var body userBody
	if err := r.Decode(&body); err != nil {
		return body, err
	}
	if body.UserID == "" {
		return body, mxerror.New(mxerror.MissingParam, "user_id is required")
	}
	return body, nil
}

func (h *handlers) groupInvite(r *httpapi.Request) (any, error) {
	body, err := groupUser(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, h.social.InviteToGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"], body.UserID)
}

func (h *handlers) groupJoin(r *httpapi.Request) (any, error) {
	return struct{}{}, h.social.JoinGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"])
}

func (h *handlers) groupLeave(r *httpapi.Request) (any, error) {
	return struct{}{}, h.social.LeaveGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"])
}

func (h *handlers) groupKick(r *httpapi.Request) (any, error) {
	body, err := groupUser(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, h.social.KickFromGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"], body.UserID, body.Reason)
}

func (h *handlers) groupTransfer(r *httpapi.Request) (any, error) {
	body, err := groupUser(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, h.social.TransferGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"], body.UserID)
}

func (h *handlers) groupUpdate(r *httpapi.Request) (any, error) {
	var body social.GroupUpdate
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	return struct{}{}, h.social.UpdateGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"], body)
}

func (h *handlers) groupMute(r *httpapi.Request) (any, error) {
	var body struct {
		Muted *bool `json:"muted"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Muted == nil {
		return nil, mxerror.New(mxerror.MissingParam, "muted is required")
	}
	return struct{}{}, h.social.MuteGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"], *body.Muted)
}

func (h *handlers) groupDissolve(r *httpapi.Request) (any, error) {
	return struct{}{}, h.social.DissolveGroup(r.Context(), r.Caller.UserID, r.Vars["roomId"])
}
