package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/sync"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerKeys(v3 *mux.Router, api *httpapi.API) {
	authed := []httpapi.Option{httpapi.Authed, httpapi.GuestsAllowed}
	api.Handle(v3, http.MethodPost, "/keys/upload", h.uploadKeys, authed...)
	api.Handle(v3, http.MethodPost, "/keys/query", h.queryKeys, authed...)
	api.Handle(v3, http.MethodPost, "/keys/claim", h.claimKeys, authed...)
	api.Handle(v3, http.MethodGet, "/keys/changes", h.keyChanges, authed...)
	api.Handle(v3, http.MethodPut, "/sendToDevice/{type}/{txnId}", h.sendToDevice, append(authed, httpapi.RateLimited)...)
}

func (h *handlers) uploadKeys(r *httpapi.Request) (any, error) {
	var up e2ee.Upload
	if err := r.Decode(&up); err != nil {
		return nil, err
	}
	counts, err := h.e2ee.UploadKeys(r.Context(), r.Caller.UserID, r.Caller.DeviceID, up)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

func (h *handlers) queryKeys(r *httpapi.Request) (any, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.DeviceKeys == nil {
		return nil, mxerror.New(mxerror.MissingParam, "device_keys is required")
	}
	keys, failures, err := h.e2ee.QueryKeys(r.Context(), h.cfg.ServerName, body.DeviceKeys)
	if err != nil {
		return nil, err
	}
	// Cross-signing keys are not stored yet; the maps are present and empty.
	return map[string]any{"device_keys": keys, "failures": failures,
		"master_keys": map[string]any{}, "self_signing_keys": map[string]any{}, "user_signing_keys": map[string]any{}}, nil
}

func (h *handlers) claimKeys(r *httpapi.Request) (any, error) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.OneTimeKeys == nil {
		return nil, mxerror.New(mxerror.MissingParam, "one_time_keys is required")
	}
	local := map[string]map[string]string{}
	failures := map[string]any{}
	for user, devices := range body.OneTimeKeys {
		if _, ok := h.users.LocalpartOf(user); ok {
			local[user] = devices
		} else if _, domain, found := cutDomain(user); found {
			failures[domain] = map[string]string{"status": "503", "message": "federation is not available yet"}
		}
	}
	claimed, err := h.e2ee.ClaimKeys(r.Context(), local)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": claimed, "failures": failures}, nil
}

func cutDomain(userID string) (string, string, bool) {
	for i := 0; i < len(userID); i++ {
		if userID[i] == ':' {
			return userID[:i], userID[i+1:], true
		}
	}
	return userID, "", false
}

func (h *handlers) keyChanges(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	if q.Get("from") == "" || q.Get("to") == "" {
		return nil, mxerror.New(mxerror.MissingParam, "from and to are required")
	}
	from, err := sync.ParseToken(q.Get("from"))
	if err != nil {
		return nil, err
	}
	to, err := sync.ParseToken(q.Get("to"))
	if err != nil {
		return nil, err
	}
	shared, err := h.rooms.SharedUsers(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	changed, err := h.e2ee.ChangedUsers(r.Context(), shared, from.DeviceLists, to.DeviceLists)
	if err != nil {
		return nil, err
	}
	if changed == nil {
		changed = []string{}
	}
	return map[string]any{"changed": changed, "left": []string{}}, nil
}

func (h *handlers) sendToDevice(r *httpapi.Request) (any, error) {
	var body struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Messages == nil {
		return nil, mxerror.New(mxerror.MissingParam, "messages is required")
	}
	for _, byDevice := range body.Messages {
		for _, content := range byDevice {
			var obj map[string]json.RawMessage
			if json.Unmarshal(content, &obj) != nil {
				return nil, mxerror.New(mxerror.BadJSON, "each message must be a JSON object")
			}
		}
	}
	err := h.e2ee.SendToDevice(r.Context(), r.Caller.UserID, r.Caller.DeviceID, r.Vars["txnId"], r.Vars["type"], body.Messages, h.cfg.ServerName)
	return struct{}{}, err
}
