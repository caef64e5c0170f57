package clientapi

import (
	"net/http"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) sharedSecretNonce(*httpapi.Request) (any, error) {
	if h.ss == nil {
		return nil, mxerror.New(mxerror.Forbidden, "shared secret registration is not enabled")
	}
	return map[string]string{"nonce": h.ss.Nonce()}, nil
}

func (h *handlers) sharedSecretRegister(r *httpapi.Request) (any, error) {
	var req users.SharedSecretRequest
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	return h.users.RegisterWithSharedSecret(r.Context(), h.ss, req)
}

func (h *handlers) whois(r *httpapi.Request) (any, error) {
	return h.users.Whois(r.Context(), r.Caller, r.Vars["userId"])
}

func adminOnly(r *httpapi.Request) error {
	if !r.Caller.IsAdmin {
		return mxerror.New(mxerror.Forbidden, "you are not a server admin")
	}
	return nil
}

func (h *handlers) listRegistrationTokens(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	tokens, err := h.users.RegistrationTokens(r.Context())
	if err != nil {
		return nil, err
	}
	return map[string]any{"registration_tokens": tokens}, nil
}

func (h *handlers) newRegistrationToken(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	var req struct {
		Token       string `json:"token"`
		Length      int    `json:"length"`
		UsesAllowed *int64 `json:"uses_allowed"`
		ExpiryTime  *int64 `json:"expiry_time"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	return h.users.CreateRegistrationToken(r.Context(), users.RegistrationToken{Token: req.Token, UsesAllowed: req.UsesAllowed, ExpiryTime: req.ExpiryTime})
}

func (h *handlers) getRegistrationToken(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	t, err := h.users.GetRegistrationToken(r.Context(), r.Vars["token"])
	return t, notFound(err, "registration token")
}

func (h *handlers) updateRegistrationToken(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	// Fields left out keep their value; null clears them (Synapse's semantics).
	var req map[string]*int64
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	cur, err := h.users.GetRegistrationToken(r.Context(), r.Vars["token"])
	if err != nil {
		return nil, notFound(err, "registration token")
	}
	uses, expiry := cur.UsesAllowed, cur.ExpiryTime
	if v, ok := req["uses_allowed"]; ok {
		uses = v
	}
	if v, ok := req["expiry_time"]; ok {
		expiry = v
	}
	t, err := h.users.UpdateRegistrationToken(r.Context(), r.Vars["token"], uses, expiry)
	return t, notFound(err, "registration token")
}

func (h *handlers) deleteRegistrationToken(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	return struct{}{}, notFound(h.users.DeleteRegistrationToken(r.Context(), r.Vars["token"]), "registration token")
}

// accountRestriction serves GET and PUT /v1/admin/suspend|lock/{userId} (spec
// v1.18): {"suspended": bool} or {"locked": bool}.
func (h *handlers) accountRestriction(r users.AccountRestriction) httpapi.Handler {
	return func(req *httpapi.Request) (any, error) {
		var set *bool
		if req.Method == http.MethodPut {
			var body map[string]*bool
			if err := req.Decode(&body); err != nil {
				return nil, err
			}
			if set = body[string(r)]; set == nil {
				return nil, mxerror.New(mxerror.BadJSON, "%s must be a boolean", r)
			}
		}
		on, err := h.users.AdminRestriction(req.Context(), req.Caller, req.Vars["userId"], r, set)
		if err != nil {
			return nil, err
		}
		return map[string]bool{string(r): on}, nil
	}
}
