package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/clientsync"
	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerKeys(v3 *mux.Router, api *httpapi.API) {
	authed := []httpapi.Option{httpapi.Authed, httpapi.GuestsAllowed}
	api.Handle(v3, http.MethodPost, "/keys/upload", h.uploadKeys, authed...)
	api.Handle(v3, http.MethodPost, "/keys/query", h.queryKeys, authed...)
	api.Handle(v3, http.MethodPost, "/keys/claim", h.claimKeys, authed...)
	api.Handle(v3, http.MethodGet, "/keys/changes", h.keyChanges, authed...)
	api.Handle(v3, http.MethodPut, "/sendToDevice/{type}/{txnId}", h.sendToDevice, append(authed, httpapi.RateLimited)...)
	api.Handle(v3, http.MethodPost, "/keys/device_signing/upload", h.uploadCrossSigning, httpapi.Authed)
	api.Handle(v3, http.MethodPost, "/keys/signatures/upload", h.uploadSignatures, httpapi.Authed)
}

func (h *handlers) uploadCrossSigning(r *httpapi.Request) (any, error) {
	var body struct {
		Auth           json.RawMessage `json:"auth"`
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
		UserSigningKey json.RawMessage `json:"user_signing_key"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	// Replacing existing cross-signing keys needs the password; setting them up
	// for the first time does not (as in Synapse, MSC3967).
	has, err := h.e2ee.HasMasterKey(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	if has {
		if _, err := h.users.Interactive(r.Context(), passwordUIA("device_signing_upload", r), body.Auth); err != nil {
			return nil, err
		}
	}
	return struct{}{}, h.e2ee.UploadCrossSigningKeys(r.Context(), r.Caller.UserID, body.MasterKey, body.SelfSigningKey, body.UserSigningKey)
}

func (h *handlers) uploadSignatures(r *httpapi.Request) (any, error) {
	var body map[string]map[string]json.RawMessage
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	failures, err := h.e2ee.UploadSignatures(r.Context(), r.Caller.UserID, body)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
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
	local, remote := map[string][]string{}, map[string][]string{}
	for u, devices := range body.DeviceKeys {
		if _, ok := h.users.LocalpartOf(u); ok {
			local[u] = devices
		} else {
			remote[u] = devices
		}
	}
	keys, _, err := h.e2ee.QueryKeys(r.Context(), h.cfg.ServerName, local)
	if err != nil {
		return nil, err
	}
	var users []string
	for u := range local {
		users = append(users, u)
	}
	master, self, userSigning, err := h.e2ee.CrossSigningKeys(r.Context(), r.Caller.UserID, users)
	if err != nil {
		return nil, err
	}
	theirs, failures := h.e2ee.QueryRemote(r.Context(), remote)
	for u, k := range theirs.DeviceKeys {
		keys[u] = k
	}
	for u, k := range theirs.Master {
		master[u] = k
	}
	for u, k := range theirs.SelfSigning {
		self[u] = k
	}
	return map[string]any{"device_keys": keys, "failures": failures,
		"master_keys": master, "self_signing_keys": self, "user_signing_keys": userSigning}, nil
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
	local, remote := map[string]map[string]string{}, map[string]map[string]string{}
	for user, devices := range body.OneTimeKeys {
		if _, ok := h.users.LocalpartOf(user); ok {
			local[user] = devices
		} else {
			remote[user] = devices
		}
	}
	claimed, err := h.e2ee.ClaimKeys(r.Context(), local)
	if err != nil {
		return nil, err
	}
	theirs, failures := h.e2ee.ClaimRemote(r.Context(), remote)
	for u, k := range theirs {
		claimed[u] = k
	}
	return map[string]any{"one_time_keys": claimed, "failures": failures}, nil
}

func (h *handlers) keyChanges(r *httpapi.Request) (any, error) {
	q := r.URL.Query()
	if q.Get("from") == "" || q.Get("to") == "" {
		return nil, mxerror.New(mxerror.MissingParam, "from and to are required")
	}
	from, err := clientsync.ParseToken(q.Get("from"))
	if err != nil {
		return nil, err
	}
	to, err := clientsync.ParseToken(q.Get("to"))
	if err != nil {
		return nil, err
	}
	changed, left, err := h.syncer.KeyChanges(r.Context(), r.Caller.UserID, from, to)
	if err != nil {
		return nil, err
	}
	return map[string]any{"changed": changed, "left": left}, nil
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
