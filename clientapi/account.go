package clientapi

import (
	"encoding/json"
	"strings"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
)

type registerRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 *string         `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
	// Type is m.login.application_service for an application service's
	// registration (the spec puts it here, beside auth).
	Type             string `json:"type"`
	GuestAccessToken string `json:"guest_access_token"`
}

func (h *handlers) register(r *httpapi.Request) (any, error) {
	var req registerRequest
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	login := users.LoginOptions{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		WithRefreshToken: req.RefreshToken, IP: r.IP}
	if asID, ok := r.AppService(); ok && h.appservices != nil {
		if req.Type != appServiceLogin && authType(req.Auth) != appServiceLogin {
			return nil, mxerror.New(mxerror.MissingParam, "an application service registers with type %s", appServiceLogin)
		}
		name := ""
		if req.Username != nil {
			name = strings.ToLower(*req.Username)
		}
		return h.appservices.Register(r.Context(), asID, name, login, req.InhibitLogin)
	}
	if req.Type == appServiceLogin || authType(req.Auth) == appServiceLogin {
		return nil, mxerror.New(mxerror.MissingToken, "%s needs an application service's token", appServiceLogin)
	}
	kind := r.URL.Query().Get("kind")
	switch kind {
	case "guest":
		if !h.users.GuestsAllowed() {
			return nil, mxerror.New(mxerror.Forbidden, "guest access is disabled")
		}
		return h.users.Register(r.Context(), users.NewAccount{Guest: true}, login, false)
	case "", "user":
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "kind must be user or guest")
	}
	return h.users.RegisterInteractive(r.Context(), users.RegisterRequest{
		Username: req.Username, Password: req.Password, DeviceID: req.DeviceID,
		InitialDeviceDisplayName: req.InitialDeviceDisplayName, InhibitLogin: req.InhibitLogin,
		RefreshToken: req.RefreshToken, GuestAccessToken: req.GuestAccessToken, IP: r.IP,
	}, req.Auth)
}

func (h *handlers) registerAvailable(r *httpapi.Request) (any, error) {
	name := r.URL.Query().Get("username")
	if name == "" {
		return nil, mxerror.New(mxerror.MissingParam, "username is required")
	}
	if err := h.users.Available(r.Context(), strings.ToLower(name)); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

func (h *handlers) registrationTokenValidity(r *httpapi.Request) (any, error) {
	token := r.URL.Query().Get("token")
	if token == "" {
		return nil, mxerror.New(mxerror.MissingParam, "token is required")
	}
	if !users.ValidRegistrationTokenString(token) {
		return nil, mxerror.New(mxerror.InvalidParam, "token must be 1 to 64 characters of A-Z a-z 0-9 . _ ~ -")
	}
	valid, err := h.users.RegistrationTokenValid(r.Context(), token)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"valid": valid}, nil
}

func (h *handlers) loginFlows(*httpapi.Request) (any, error) {
	flows := []map[string]any{
		{"type": "m.login.password"},
		{"type": "m.login.token", "get_login_token": true},
	}
	if h.appservices != nil && len(h.appservices.Registrations()) > 0 {
		flows = append(flows, map[string]any{"type": appServiceLogin})
	}
	return map[string]any{"flows": flows}, nil
}

type loginRequest struct {
	Type       string            `json:"type"`
	Identifier *users.Identifier `json:"identifier"`
	// User is the deprecated top-level user field, still sent by some clients.
	User                     string `json:"user"`
	Password                 string `json:"password"`
	Token                    string `json:"token"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

func (h *handlers) login(r *httpapi.Request) (any, error) {
	var req loginRequest
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	opts := users.LoginOptions{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		WithRefreshToken: req.RefreshToken, IP: r.IP}
	switch req.Type {
	case "m.login.password":
		user := req.User
		if req.Identifier != nil {
			if req.Identifier.Type != "m.id.user" {
				return nil, mxerror.New(mxerror.Unknown, "only m.id.user identifiers are supported")
			}
			user = req.Identifier.User
		}
		if user == "" {
			return nil, mxerror.New(mxerror.MissingParam, "identifier.user is required")
		}
		return h.users.LoginPassword(r.Context(), user, req.Password, opts)
	case appServiceLogin:
		asID, ok := r.AppService()
		if !ok || h.appservices == nil {
			return nil, mxerror.New(mxerror.MissingToken, "%s needs an application service's token", appServiceLogin)
		}
		user := req.User
		if req.Identifier != nil {
			user = req.Identifier.User
		}
		if user == "" {
			return nil, mxerror.New(mxerror.MissingParam, "identifier.user is required")
		}
		return h.appservices.Login(r.Context(), asID, user, opts)
	case "m.login.token":
		if req.Token == "" {
			return nil, mxerror.New(mxerror.MissingParam, "token is required")
		}
		return h.users.LoginWithToken(r.Context(), req.Token, opts)
	case "":
		return nil, mxerror.New(mxerror.MissingParam, "type is required")
	}
	return nil, mxerror.New(mxerror.Unknown, "unknown login type %q", req.Type)
}

// passwordUIA is the auth for sensitive operations on one's own account.
func passwordUIA(purpose string, r *httpapi.Request) users.Interactive {
	return users.Interactive{Purpose: purpose, Localpart: r.Caller.Localpart,
		Flows: []users.Flow{{Stages: []string{users.StagePassword}}}}
}

func (h *handlers) getLoginToken(r *httpapi.Request) (any, error) {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	if _, err := h.users.Interactive(r.Context(), passwordUIA("get_login_token", r), req.Auth); err != nil {
		return nil, err
	}
	token, expires, err := h.users.CreateLoginToken(r.Context(), r.Caller.Localpart)
	if err != nil {
		return nil, err
	}
	return map[string]any{"login_token": token, "expires_in_ms": expires}, nil
}

func (h *handlers) refresh(r *httpapi.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, mxerror.New(mxerror.MissingParam, "refresh_token is required")
	}
	s, err := h.users.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	return map[string]any{"access_token": s.AccessToken, "refresh_token": s.RefreshToken, "expires_in_ms": s.ExpiresInMs}, nil
}

func (h *handlers) logout(r *httpapi.Request) (any, error) {
	return struct{}{}, h.users.Logout(r.Context(), r.Caller)
}

func (h *handlers) logoutAll(r *httpapi.Request) (any, error) {
	return struct{}{}, h.users.LogoutAll(r.Context(), r.Caller.Localpart)
}

func (h *handlers) whoami(r *httpapi.Request) (any, error) {
	return map[string]any{"user_id": r.Caller.UserID, "device_id": r.Caller.DeviceID, "is_guest": r.Caller.IsGuest}, nil
}

func (h *handlers) changePassword(r *httpapi.Request) (any, error) {
	var req struct {
		Auth          json.RawMessage `json:"auth"`
		NewPassword   *string         `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	if req.NewPassword == nil {
		return nil, mxerror.New(mxerror.MissingParam, "new_password is required")
	}
	if err := users.CheckNewPassword(*req.NewPassword); err != nil {
		return nil, err
	}
	if _, err := h.users.Interactive(r.Context(), passwordUIA("change_password", r), req.Auth); err != nil {
		return nil, err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	return struct{}{}, h.users.ChangePassword(r.Context(), r.Caller.Localpart, *req.NewPassword, logout, r.Caller.DeviceID)
}

func (h *handlers) deactivate(r *httpapi.Request) (any, error) {
	var req struct {
		Auth  json.RawMessage `json:"auth"`
		Erase bool            `json:"erase"`
	}
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	// An application service deactivating one of its users proves itself with
	// its token; its users have no password to give.
	if r.Caller.AppService == "" {
		if _, err := h.users.Interactive(r.Context(), passwordUIA("deactivate", r), req.Auth); err != nil {
			return nil, err
		}
	}
	if err := h.users.Deactivate(r.Context(), r.Caller.Localpart, req.Erase); err != nil {
		return nil, err
	}
	// No identity server is ever bound, so there is nothing to unbind.
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}

// threepids lists the account's third-party identifiers. Hongyan binds none (no
// email or phone verification), so the list is always empty, which is what Element's
// settings page needs to render.
func (h *handlers) threepids(*httpapi.Request) (any, error) {
	return map[string]any{"threepids": []any{}}, nil
}

// openIDToken issues a token proving the caller's identity to a third party, which
// checks it at /_matrix/federation/v1/openid/userinfo.
func (h *handlers) openIDToken(r *httpapi.Request) (any, error) {
	if r.Vars["userId"] != r.Caller.UserID {
		return nil, mxerror.New(mxerror.Forbidden, "cannot request an OpenID token for another user")
	}
	token, err := h.users.NewOpenIDToken(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"access_token": token, "token_type": "Bearer", "matrix_server_name": h.cfg.ServerName,
		"expires_in": int(users.OpenIDLifetime.Seconds())}, nil
}

func (h *handlers) reportUser(r *httpapi.Request) (any, error) {
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Reason == nil {
		return nil, mxerror.New(mxerror.MissingParam, "reason is required (it may be empty)")
	}
	return struct{}{}, h.users.ReportUser(r.Context(), r.Caller.UserID, r.Vars["userId"], *body.Reason)
}
