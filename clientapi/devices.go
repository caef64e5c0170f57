package clientapi

import (
	"encoding/json"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) devices(r *httpapi.Request) (any, error) {
	list, err := h.users.Devices(r.Context(), r.Caller.Localpart)
	if err != nil {
		return nil, err
	}
	return map[string]any{"devices": list}, nil
}

func (h *handlers) device(r *httpapi.Request) (any, error) {
	d, err := h.users.Device(r.Context(), r.Caller.Localpart, r.Vars["deviceId"])
	return d, notFound(err, "device")
}

func (h *handlers) renameDevice(r *httpapi.Request) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	if req.DisplayName == nil {
		// Nothing to change, but the device must still exist.
		_, err := h.users.Device(r.Context(), r.Caller.Localpart, r.Vars["deviceId"])
		return struct{}{}, notFound(err, "device")
	}
	if len(*req.DisplayName) > 100 {
		return nil, mxerror.New(mxerror.InvalidParam, "display_name may not be longer than 100 bytes")
	}
	err := h.users.RenameDevice(r.Context(), r.Caller.Localpart, r.Vars["deviceId"], *req.DisplayName)
	return struct{}{}, notFound(err, "device")
}

func (h *handlers) deleteDevice(r *httpapi.Request) (any, error) {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	id := r.Vars["deviceId"]
	if _, err := h.users.Device(r.Context(), r.Caller.Localpart, id); err != nil {
		return nil, notFound(err, "device")
	}
	// The session is bound to this device: one started to delete another device
	// cannot finish deleting this one.
	op := passwordUIA("delete_device", r)
	op.Target = id
	if _, err := h.users.Interactive(r.Context(), op, req.Auth); err != nil {
		return nil, err
	}
	return struct{}{}, h.users.DeleteDevices(r.Context(), r.Caller.Localpart, []string{id})
}

func (h *handlers) deleteDevices(r *httpapi.Request) (any, error) {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices *[]string       `json:"devices"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, mxerror.New(mxerror.MissingParam, "devices is required")
	}
	if _, err := h.users.Interactive(r.Context(), passwordUIA("delete_devices", r), req.Auth); err != nil {
		return nil, err
	}
	return struct{}{}, h.users.DeleteDevices(r.Context(), r.Caller.Localpart, *req.Devices)
}
