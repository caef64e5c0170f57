package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
)

// Dehydrated devices (MSC3814, as Element uses it): a device without an access token
// whose keys receive messages while all of a user's devices are offline; the next
// device to log in rehydrates it and reads its to-device messages.
func registerDehydrated(router *mux.Router, api *httpapi.API, h *handlers) {
	msc := httpapi.Subrouter(router, "/_matrix/client/unstable/org.matrix.msc3814.v1")
	api.Handle(msc, http.MethodPut, "/dehydrated_device", h.putDehydratedDevice, httpapi.Authed)
	api.Handle(msc, http.MethodGet, "/dehydrated_device", h.getDehydratedDevice, httpapi.Authed)
	api.Handle(msc, http.MethodDelete, "/dehydrated_device", h.deleteDehydratedDevice, httpapi.Authed)
	api.Handle(msc, http.MethodPost, "/dehydrated_device/{deviceId}/events", h.dehydratedDeviceEvents, httpapi.Authed)
}

func (h *handlers) putDehydratedDevice(r *httpapi.Request) (any, error) {
	var body struct {
		DeviceID    string          `json:"device_id"`
		DeviceData  json.RawMessage `json:"device_data"`
		DisplayName string          `json:"initial_device_display_name"`
		e2ee.Upload
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.DeviceID == "" {
		return nil, mxerror.New(mxerror.MissingParam, "device_id is required")
	}
	if len(body.DeviceData) == 0 || body.DeviceData[0] != '{' {
		return nil, mxerror.New(mxerror.BadJSON, "device_data must be an object")
	}
	if err := h.users.SetDehydratedDevice(r.Context(), r.Caller.Localpart, body.DeviceID, body.DisplayName, body.DeviceData); err != nil {
		return nil, err
	}
	if len(body.DeviceKeys) > 0 || len(body.OneTimeKeys) > 0 || len(body.FallbackKeys) > 0 {
		if _, err := h.e2ee.UploadKeys(r.Context(), r.Caller.UserID, body.DeviceID, body.Upload); err != nil {
			return nil, err
		}
	}
	return map[string]string{"device_id": body.DeviceID}, nil
}

func (h *handlers) getDehydratedDevice(r *httpapi.Request) (any, error) {
	deviceID, data, err := h.users.DehydratedDevice(r.Context(), r.Caller.Localpart)
	if errors.Is(err, users.ErrNotFound) {
		return nil, mxerror.New(mxerror.NotFound, "no dehydrated device")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_id": deviceID, "device_data": data}, nil
}

func (h *handlers) deleteDehydratedDevice(r *httpapi.Request) (any, error) {
	deviceID, err := h.users.DeleteDehydratedDevice(r.Context(), r.Caller.Localpart)
	if errors.Is(err, users.ErrNotFound) {
		return nil, mxerror.New(mxerror.NotFound, "no dehydrated device")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": deviceID}, nil
}

// dehydratedDeviceEvents pages through the dehydrated device's to-device messages;
// passing a next_batch back acknowledges (and deletes) what came before it.
func (h *handlers) dehydratedDeviceEvents(r *httpapi.Request) (any, error) {
	var body struct {
		NextBatch string `json:"next_batch"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	deviceID, _, err := h.users.DehydratedDevice(r.Context(), r.Caller.Localpart)
	if err != nil || deviceID != r.Vars["deviceId"] {
		return nil, mxerror.New(mxerror.Forbidden, "%s is not your dehydrated device", r.Vars["deviceId"])
	}
	var acked int64
	if body.NextBatch != "" {
		if acked, err = strconv.ParseInt(body.NextBatch, 10, 64); err != nil || acked < 0 {
			return nil, mxerror.New(mxerror.InvalidParam, "invalid next_batch")
		}
	}
	upTo, err := h.e2ee.ToDevicePosition(r.Context())
	if err != nil {
		return nil, err
	}
	msgs, last, err := h.e2ee.TakeToDevice(r.Context(), r.Caller.UserID, deviceID, acked, upTo, 100)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": msgs, "next_batch": strconv.FormatInt(last, 10)}, nil
}
