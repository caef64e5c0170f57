package clientapi

import (
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

// supportedVersions are the spec versions Hongyan speaks. Clients pick features by
// the newest one listed, so a version appears here only once its endpoints exist.
var supportedVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
}

// roomVersions are the room versions the room engine accepts.
var roomVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

func (h *handlers) versions(*httpapi.Request) (any, error) {
	return map[string]any{
		"versions": supportedVersions,
		"unstable_features": map[string]bool{
			// Element X looks for this before it uses sliding sync.
			"org.matrix.simplified_msc3575": true,
			// Delayed events (Element Call schedules its own call leave).
			"org.matrix.msc4140": h.delayed != nil,
		},
	}, nil
}

func (h *handlers) wellKnownClient(*httpapi.Request) (any, error) {
	out := map[string]any{"m.homeserver": map[string]string{"base_url": h.cfg.PublicBaseURL}}
	if t := h.rtcFoci(); len(t) > 0 {
		out["org.matrix.msc4143.rtc_foci"] = t // Element Call's focus discovery
	}
	return out, nil
}

func (h *handlers) wellKnownServer(*httpapi.Request) (any, error) {
	return map[string]string{"m.server": h.cfg.ServerName}, nil
}

func (h *handlers) capabilities(r *httpapi.Request) (any, error) {
	available := map[string]string{}
	for _, v := range roomVersions {
		available[v] = "stable"
	}
	def := h.cfg.DefaultRoomVersion
	if def == "" {
		def = "10"
	}
	// Spec v1.18: whether the caller may suspend and lock accounts — a server
	// admin may, nobody else.
	admin := r.Caller.IsAdmin
	return map[string]any{"capabilities": map[string]any{
		"m.account_moderation": map[string]bool{"suspend": admin, "lock": admin},
		"m.change_password":    map[string]bool{"enabled": true},
		"m.room_versions":      map[string]any{"default": def, "available": available},
		"m.set_displayname":    map[string]bool{"enabled": true},
		"m.set_avatar_url":     map[string]bool{"enabled": true},
		"m.3pid_changes":       map[string]bool{"enabled": false},
		"m.get_login_token":    map[string]bool{"enabled": true},
	}}, nil
}

func (h *handlers) wellKnownSupport(*httpapi.Request) (any, error) {
	s := h.cfg.Support
	if len(s.Contacts) == 0 && s.Page == "" {
		return nil, mxerror.New(mxerror.NotFound, "no support information is configured")
	}
	res := map[string]any{}
	if len(s.Contacts) > 0 {
		res["contacts"] = s.Contacts
	}
	if s.Page != "" {
		res["support_page"] = s.Page
	}
	return res, nil
}
