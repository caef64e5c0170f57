package clientapi

import (
	"bytes"
	"strconv"

	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

// serverOwnedAccountData are the types only the server may write through other APIs
// (read markers, push rules); the spec answers 405 M_BAD_JSON for them.
var serverOwnedAccountData = map[string]bool{"m.fully_read": true, "m.push_rules": true}

func (h *handlers) accountDataTarget(r *httpapi.Request) (local, roomID string, err error) {
	local, err = h.selfOnly(r)
	if err != nil {
		return "", "", err
	}
	roomID = r.Vars["roomId"]
	if _, hasRoom := r.Vars["roomId"]; hasRoom && !validRoomID(roomID) {
		return "", "", mxerror.New(mxerror.InvalidParam, "%q is not a valid room ID", roomID)
	}
	return local, roomID, nil
}

func (h *handlers) accountData(r *httpapi.Request) (any, error) {
	local, roomID, err := h.accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	content, err := h.users.AccountData(r.Context(), local, roomID, r.Vars["type"])
	return content, notFound(err, "account data")
}

func (h *handlers) setAccountData(r *httpapi.Request) (any, error) {
	local, roomID, err := h.accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	typ := r.Vars["type"]
	if serverOwnedAccountData[typ] {
		return nil, &mxerror.Error{Code: mxerror.BadJSON, Message: typ + " is managed by the server and cannot be set here", Status: 405}
	}
	body, err := r.Body()
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := httpapi.DecodeJSON(body, &obj); err != nil {
		return nil, err
	}
	_, err = h.users.SetAccountData(r.Context(), local, roomID, typ, bytes.TrimSpace(body))
	return struct{}{}, err
}

func validRoomID(id string) bool {
	return len(id) > 3 && id[0] == '!' && bytes.IndexByte([]byte(id), ':') > 1
}

func (h *handlers) createFilter(r *httpapi.Request) (any, error) {
	local, err := h.selfOnly(r)
	if err != nil {
		return nil, err
	}
	body, err := r.Body()
	if err != nil {
		return nil, err
	}
	if _, err := filter.Parse(body); err != nil {
		return nil, err
	}
	id, err := h.users.CreateFilter(r.Context(), local, bytes.TrimSpace(body))
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": id}, nil
}

func (h *handlers) filter(r *httpapi.Request) (any, error) {
	local, err := h.selfOnly(r)
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseInt(r.Vars["filterId"], 10, 64)
	if err != nil || id < 0 {
		return nil, mxerror.New(mxerror.NotFound, "filter not found")
	}
	f, err := h.users.Filter(r.Context(), local, id)
	return f, notFound(err, "filter")
}
