package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/delayed"
	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerRooms(v3 *mux.Router, api *httpapi.API) {
	authed := []httpapi.Option{httpapi.Authed, httpapi.GuestsAllowed}
	limited := append(authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodPost, "/createRoom", h.createRoom, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodPost, "/join/{room}", h.join, limited...)
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/join", h.join, limited...)
	api.Handle(v3, http.MethodPost, "/knock/{room}", h.knock, limited...)
	for _, m := range []string{"invite", "leave", "kick", "ban", "unban"} {
		api.Handle(v3, http.MethodPost, "/rooms/{roomId}/"+m, h.membership(m), limited...)
	}
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/forget", h.forget, authed...)
	api.Handle(v3, http.MethodPut, "/rooms/{roomId}/send/{type}/{txnId}", h.send, limited...)
	// The r0 form without a transaction ID (not idempotent), which older clients
	// and Sytest use.
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/send/{type}", h.send, limited...)
	api.Handle(v3, http.MethodPut, "/rooms/{roomId}/state/{type}", h.sendState, limited...)
	api.Handle(v3, http.MethodPut, "/rooms/{roomId}/state/{type}/{stateKey:.*}", h.sendState, limited...)
	api.Handle(v3, http.MethodPut, "/rooms/{roomId}/redact/{eventId}/{txnId}", h.redact, limited...)
	// The r0 form without a transaction ID, which older clients and Sytest use.
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/redact/{eventId}", h.redact, limited...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/state", h.state, authed...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/state/{type}", h.stateEvent, authed...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/state/{type}/{stateKey:.*}", h.stateEvent, authed...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/event/{eventId}", h.event, authed...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/members", h.members, authed...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/joined_members", h.joinedMembers, authed...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/messages", h.messages, authed...)
	api.Handle(v3, http.MethodGet, "/rooms/{roomId}/aliases", h.roomAliases, authed...)
	api.Handle(v3, http.MethodGet, "/joined_rooms", h.joinedRooms, authed...)
	api.Handle(v3, http.MethodPost, "/peek/{room}", h.peek, httpapi.Authed)
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/unpeek", h.unpeek, httpapi.Authed)
	api.Handle(v3, http.MethodPost, "/rooms/{roomId}/upgrade", h.upgrade, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodGet, "/directory/room/{alias}", h.resolveAlias)
	api.Handle(v3, http.MethodPut, "/directory/room/{alias}", h.setAlias, httpapi.Authed)
	api.Handle(v3, http.MethodDelete, "/directory/room/{alias}", h.deleteAlias, httpapi.Authed)
	api.Handle(v3, http.MethodGet, "/directory/list/room/{roomId}", h.roomVisibility)
	api.Handle(v3, http.MethodPut, "/directory/list/room/{roomId}", h.setRoomVisibility, httpapi.Authed)
}

// roomVar validates the {roomId} path variable.
func roomVar(r *httpapi.Request) (string, error) {
	id := r.Vars["roomId"]
	return id, rooms.CheckRoomID(id)
}

// peek starts the device peeking into a world-readable room (MSC2753).
func (h *handlers) peek(r *httpapi.Request) (any, error) {
	roomID, err := h.rooms.Peek(r.Context(), r.Caller.UserID, r.Caller.DeviceID, r.Vars["room"])
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

func (h *handlers) unpeek(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, h.rooms.Unpeek(r.Context(), r.Caller.UserID, r.Caller.DeviceID, roomID)
}

func (h *handlers) createRoom(r *httpapi.Request) (any, error) {
	var req rooms.CreateRequest
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	id, err := h.rooms.CreateRoom(r.Context(), r.Caller.UserID, req)
	if err != nil {
		return nil, err
	}
	out := map[string]string{"room_id": id}
	if req.RoomAliasName != "" {
		out["room_alias"] = "#" + req.RoomAliasName + ":" + h.cfg.ServerName
	}
	return out, nil
}

func (h *handlers) join(r *httpapi.Request) (any, error) {
	return h.selfMembership(r, "join")
}

func (h *handlers) knock(r *httpapi.Request) (any, error) {
	return h.selfMembership(r, "knock")
}

// selfMembership joins or knocks on a room named by ID or alias.
func (h *handlers) selfMembership(r *httpapi.Request, membership string) (any, error) {
	target := r.Vars["room"]
	if target == "" {
		target = r.Vars["roomId"]
	}
	// The body's other keys go into the membership event's content, as in
	// Synapse (a per-room displayname, say).
	var body map[string]json.RawMessage
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	var reason string
	if raw, ok := body["reason"]; ok {
		if err := json.Unmarshal(raw, &reason); err != nil {
			return nil, mxerror.New(mxerror.BadJSON, "reason must be a string")
		}
		delete(body, "reason")
	}
	q := r.URL.Query()
	roomID, err := h.rooms.JoinByIDOrAlias(r.Context(), rooms.SelfJoin{UserID: r.Caller.UserID, Room: target,
		Via: append(q["via"], q["server_name"]...), Reason: reason, Knock: membership == "knock", Content: body})
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

func (h *handlers) membership(kind string) httpapi.Handler {
	return func(r *httpapi.Request) (any, error) {
		roomID, err := roomVar(r)
		if err != nil {
			return nil, err
		}
		var body struct {
			UserID *string `json:"user_id"`
			Reason string  `json:"reason"`
		}
		if err := r.Decode(&body); err != nil {
			return nil, err
		}
		target := r.Caller.UserID
		if kind != "leave" {
			if body.UserID == nil {
				return nil, mxerror.New(mxerror.MissingParam, "user_id is required")
			}
			target = *body.UserID
		}
		_, err = h.rooms.SetMembership(r.Context(), roomID, rooms.Membership{Sender: r.Caller.UserID, Target: target, Membership: kind, Reason: body.Reason})
		return struct{}{}, err
	}
}

func (h *handlers) forget(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, h.rooms.Forget(r.Context(), r.Caller.UserID, roomID)
}

func (h *handlers) txn(r *httpapi.Request) *rooms.Txn {
	if r.Vars["txnId"] == "" {
		return nil // not idempotent: each request is a new event
	}
	return &rooms.Txn{Localpart: r.Caller.Localpart, DeviceID: r.Caller.DeviceID, ID: r.Vars["txnId"]}
}

func (h *handlers) send(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	body, err := eventContent(r)
	if err != nil {
		return nil, err
	}
	if delayRequested(r) {
		return h.scheduleDelayed(r, delayed.Request{RoomID: roomID, Type: r.Vars["type"], Content: body, TxnID: delayTxn(r)})
	}
	sent, err := h.rooms.Send(r.Context(), roomID, rooms.Proto{Sender: r.Caller.UserID, Type: r.Vars["type"], Content: body, Txn: h.txn(r), TS: assertedTS(r)})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": sent.EventID}, nil
}

// eventContent reads a request body that must be a JSON object: an event's content.
func eventContent(r *httpapi.Request) (json.RawMessage, error) {
	body, err := r.Body()
	if err != nil {
		return nil, err
	}
	if len(body) > rooms.MaxEventBytes {
		return nil, mxerror.New(mxerror.TooLarge, "event content is larger than %d bytes", rooms.MaxEventBytes)
	}
	var obj map[string]json.RawMessage
	if err := httpapi.DecodeJSON(body, &obj); err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return json.RawMessage("{}"), nil
	}
	return body, nil
}

func (h *handlers) sendState(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	body, err := eventContent(r)
	if err != nil {
		return nil, err
	}
	stateKey := r.Vars["stateKey"]
	if delayRequested(r) {
		return h.scheduleDelayed(r, delayed.Request{RoomID: roomID, Type: r.Vars["type"], StateKey: &stateKey, Content: body})
	}
	sent, err := h.rooms.Send(r.Context(), roomID, rooms.Proto{Sender: r.Caller.UserID, Type: r.Vars["type"], StateKey: &stateKey, Content: body, TS: assertedTS(r)})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": sent.EventID}, nil
}

func (h *handlers) redact(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	sent, err := h.rooms.Redact(r.Context(), roomID, r.Caller.UserID, r.Vars["eventId"], body.Reason, h.txn(r))
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": sent.EventID}, nil
}

func (h *handlers) state(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	return h.rooms.State(r.Context(), roomID, r.Caller.UserID)
}

func (h *handlers) stateEvent(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	ev, err := h.rooms.StateEvent(r.Context(), roomID, r.Caller.UserID, r.Vars["type"], r.Vars["stateKey"])
	if err != nil {
		return nil, err
	}
	if r.URL.Query().Get("format") == "event" {
		return ev, nil
	}
	return ev.Content, nil
}

func (h *handlers) event(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	return h.rooms.Event(r.Context(), roomID, r.Caller.UserID, r.Vars["eventId"])
}

func (h *handlers) members(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	chunk, err := h.rooms.Members(r.Context(), roomID, r.Caller.UserID, rooms.MembersQuery{
		At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership")})
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": chunk}, nil
}

func (h *handlers) joinedMembers(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	joined, err := h.rooms.JoinedMembers(r.Context(), roomID, r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"joined": joined}, nil
}

func (h *handlers) joinedRooms(r *httpapi.Request) (any, error) {
	ids, err := h.rooms.JoinedRooms(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"joined_rooms": ids}, nil
}

func (h *handlers) messages(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	mq := rooms.MessagesQuery{From: q.Get("from"), To: q.Get("to"), DeviceID: r.Caller.DeviceID, Backfill: true}
	switch q.Get("dir") {
	case "b":
		mq.Backward = true
	case "f":
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "dir must be b or f")
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, mxerror.New(mxerror.InvalidParam, "limit must be a non-negative integer")
		}
		mq.Limit = n
	}
	if mq.Filter, err = filter.ParseRoomEventFilter(q.Get("filter")); err != nil {
		return nil, err
	}
	return h.rooms.Messages(r.Context(), roomID, r.Caller.UserID, mq)
}

func (h *handlers) roomAliases(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	if _, err := h.rooms.State(r.Context(), roomID, r.Caller.UserID); err != nil {
		return nil, err
	}
	aliases, err := h.rooms.Aliases(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"aliases": aliases}, nil
}

func (h *handlers) resolveAlias(r *httpapi.Request) (any, error) {
	alias := r.Vars["alias"]
	roomID, servers, err := h.rooms.LookupAlias(r.Context(), alias)
	if err != nil {
		if errors.Is(err, rooms.ErrNotFound) {
			return nil, mxerror.New(mxerror.NotFound, "room alias %s not found", alias)
		}
		return nil, err
	}
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

func (h *handlers) setAlias(r *httpapi.Request) (any, error) {
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.RoomID == "" {
		return nil, mxerror.New(mxerror.MissingParam, "room_id is required")
	}
	return struct{}{}, h.rooms.SetAlias(r.Context(), r.Vars["alias"], body.RoomID, r.Caller.UserID)
}

func (h *handlers) deleteAlias(r *httpapi.Request) (any, error) {
	return struct{}{}, h.rooms.DeleteAlias(r.Context(), r.Vars["alias"], r.Caller.UserID)
}

func (h *handlers) roomVisibility(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	v, err := h.rooms.Visibility(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"visibility": v}, nil
}

func (h *handlers) setRoomVisibility(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	return struct{}{}, h.rooms.Publish(r.Context(), roomID, r.Caller.UserID, body.Visibility)
}

func (h *handlers) upgrade(r *httpapi.Request) (any, error) {
	roomID, err := roomVar(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		NewVersion string `json:"new_version"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.NewVersion == "" {
		return nil, mxerror.New(mxerror.MissingParam, "new_version is required")
	}
	newID, err := h.rooms.Upgrade(r.Context(), roomID, r.Caller.UserID, body.NewVersion)
	if err != nil {
		return nil, err
	}
	return map[string]string{"replacement_room": newID}, nil
}
