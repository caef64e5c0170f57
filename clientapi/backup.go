package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerBackup(v3 *mux.Router, api *httpapi.API) {
	a := httpapi.Authed
	api.Handle(v3, http.MethodPost, "/room_keys/version", h.createBackup, a)
	api.Handle(v3, http.MethodGet, "/room_keys/version", h.getBackup, a)
	api.Handle(v3, http.MethodGet, "/room_keys/version/{backupVersion}", h.getBackup, a)
	api.Handle(v3, http.MethodPut, "/room_keys/version/{backupVersion}", h.updateBackup, a)
	api.Handle(v3, http.MethodDelete, "/room_keys/version/{backupVersion}", h.deleteBackup, a)
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		api.Handle(v3, http.MethodPut, p, h.putBackupKeys, a)
		api.Handle(v3, http.MethodGet, p, h.getBackupKeys, a)
		api.Handle(v3, http.MethodDelete, p, h.deleteBackupKeys, a)
	}
}

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

func (h *handlers) createBackup(r *httpapi.Request) (any, error) {
	var body backupVersionBody
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	v, err := h.e2ee.CreateBackup(r.Context(), r.Caller.UserID, body.Algorithm, body.AuthData)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": v}, nil
}

func (h *handlers) getBackup(r *httpapi.Request) (any, error) {
	return h.e2ee.Backup(r.Context(), r.Caller.UserID, r.Vars["backupVersion"])
}

func (h *handlers) updateBackup(r *httpapi.Request) (any, error) {
	var body backupVersionBody
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Version != "" && body.Version != r.Vars["backupVersion"] {
		return nil, mxerror.New(mxerror.InvalidParam, "version in the body does not match the path")
	}
	if body.Algorithm == "" || len(body.AuthData) == 0 {
		return nil, mxerror.New(mxerror.MissingParam, "algorithm and auth_data are required")
	}
	return struct{}{}, h.e2ee.UpdateBackup(r.Context(), r.Caller.UserID, r.Vars["backupVersion"], body.Algorithm, body.AuthData)
}

func (h *handlers) deleteBackup(r *httpapi.Request) (any, error) {
	return struct{}{}, h.e2ee.DeleteBackup(r.Context(), r.Caller.UserID, r.Vars["backupVersion"])
}

func backupVersionParam(r *httpapi.Request) (string, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return "", mxerror.New(mxerror.MissingParam, "version is required")
	}
	return v, nil
}

func (h *handlers) putBackupKeys(r *httpapi.Request) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	keys := e2ee.BackupKeys{}
	roomID, sessionID := r.Vars["roomId"], r.Vars["sessionId"]
	switch {
	case sessionID != "":
		var d e2ee.KeyBackupData
		if err := r.Decode(&d); err != nil {
			return nil, err
		}
		keys[roomID] = map[string]e2ee.KeyBackupData{sessionID: d}
	case roomID != "":
		var body struct {
			Sessions map[string]e2ee.KeyBackupData `json:"sessions"`
		}
		if err := r.Decode(&body); err != nil {
			return nil, err
		}
		keys[roomID] = body.Sessions
	default:
		var body struct {
			Rooms map[string]struct {
				Sessions map[string]e2ee.KeyBackupData `json:"sessions"`
			} `json:"rooms"`
		}
		if err := r.Decode(&body); err != nil {
			return nil, err
		}
		for room, v := range body.Rooms {
			keys[room] = v.Sessions
		}
	}
	etag, count, err := h.e2ee.PutKeys(r.Context(), r.Caller.UserID, version, keys)
	if err != nil {
		return nil, err
	}
	return map[string]any{"etag": etag, "count": count}, nil
}

func (h *handlers) getBackupKeys(r *httpapi.Request) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	roomID, sessionID := r.Vars["roomId"], r.Vars["sessionId"]
	keys, err := h.e2ee.Keys(r.Context(), r.Caller.UserID, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		d, ok := keys[roomID][sessionID]
		if !ok {
			return nil, mxerror.New(mxerror.NotFound, "no backup of session %s", sessionID)
		}
		return d, nil
	case roomID != "":
		sessions := keys[roomID]
		if sessions == nil {
			sessions = map[string]e2ee.KeyBackupData{}
		}
		return map[string]any{"sessions": sessions}, nil
	}
	rooms := map[string]any{}
	for room, sessions := range keys {
		rooms[room] = map[string]any{"sessions": sessions}
	}
	return map[string]any{"rooms": rooms}, nil
}

func (h *handlers) deleteBackupKeys(r *httpapi.Request) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	etag, count, err := h.e2ee.DeleteKeys(r.Context(), r.Caller.UserID, version, r.Vars["roomId"], r.Vars["sessionId"])
	if err != nil {
		return nil, err
	}
	return map[string]any{"etag": etag, "count": count}, nil
}
