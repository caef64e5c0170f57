package clientapi

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

const (
	maxDisplayNameLength = 256
	maxAvatarURLLength   = 1000
)

// profileOf returns a user's profile, local or remote, as users.ProfileOf finds it.
func (h *handlers) profileOf(r *httpapi.Request) (map[string]any, error) {
	p, err := h.users.ProfileOf(r.Context(), r.Vars["userId"])
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if p.DisplayName != nil {
		out["displayname"] = *p.DisplayName
	}
	if p.AvatarURL != nil {
		out["avatar_url"] = *p.AvatarURL
	}
	return out, nil
}

func (h *handlers) profile(r *httpapi.Request) (any, error) {
	return h.profileOf(r)
}

func (h *handlers) profileField(r *httpapi.Request) (any, error) {
	p, err := h.profileOf(r)
	if err != nil {
		return nil, err
	}
	// An existing user whose displayname or avatar_url is unset answers 200 with
	// no value, as Synapse does: clients (and Sytest) read the field before setting
	// it, and 404 stays the answer for a user who does not exist.
	field := r.Vars["field"]
	out := map[string]any{}
	if v, ok := p[field]; ok {
		out[field] = v
	}
	return out, nil
}

func (h *handlers) setProfileField(r *httpapi.Request) (any, error) {
	local, err := h.selfOnly(r)
	if err != nil {
		return nil, err
	}
	field := r.Vars["field"]
	var body map[string]json.RawMessage
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	raw, ok := body[field]
	if !ok {
		return nil, mxerror.New(mxerror.MissingParam, "%s is required", field)
	}
	var value *string
	if err := json.Unmarshal(raw, &value); err != nil {
		return nil, mxerror.New(mxerror.BadJSON, "%s must be a string", field)
	}
	limit := maxDisplayNameLength
	if field == "avatar_url" {
		limit = maxAvatarURLLength
	}
	if value != nil && utf8.RuneCountInString(*value) > limit {
		return nil, mxerror.New(mxerror.InvalidParam, "%s may not be longer than %d characters", field, limit)
	}
	if field == "displayname" {
		err = h.users.SetDisplayName(r.Context(), local, value)
	} else {
		err = h.users.SetAvatarURL(r.Context(), local, value)
	}
	return struct{}{}, err
}
