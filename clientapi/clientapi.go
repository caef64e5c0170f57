// Package clientapi is the Matrix client–server API: it decodes requests, calls the
// core in homeserver/, and encodes the answers. Rules live in the core, not here.
package clientapi

import (
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/appservice"
	"github.com/hongyan/hongyan/homeserver/calls"
	"github.com/hongyan/hongyan/homeserver/clientsync"
	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/delayed"
	"github.com/hongyan/hongyan/homeserver/directory"
	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/pusher"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/rtc"
	"github.com/hongyan/hongyan/homeserver/search"
	"github.com/hongyan/hongyan/homeserver/social"
	"github.com/hongyan/hongyan/homeserver/typing"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
)

// Config is what the client API needs to know about the server.
type Config struct {
	// ServerName is this server's name.
	ServerName string
	// PublicBaseURL is the client API's public URL for /.well-known/matrix/client.
	PublicBaseURL string
	// DefaultRoomVersion and the supported versions are advertised in /capabilities.
	DefaultRoomVersion string
	// Support is served as /.well-known/matrix/support.
	Support config.Support
}

// Deps are the core services the client API calls.
type Deps struct {
	Users    *users.Service
	Rooms    *rooms.Service
	Sync     *clientsync.Service
	Receipts *receipts.Service
	Typing   *typing.Service
	Presence *presence.Service
	E2EE     *e2ee.Service
	// Directory searches users.
	Directory *directory.Service
	Push      *push.Service
	// Social serves the IM API (friends and groups); nil leaves it off.
	Social  *social.Service
	Pushers *pusher.Service
	// Search answers /search.
	Search *search.Service
	// SharedSecret enables /_synapse/admin/v1/register; nil disables it.
	SharedSecret *users.SharedSecret
	// AppServices registers and logs in application services' users and
	// answers their pings and third-party lookups; nil: none are configured.
	AppServices *appservice.Service
	// Delayed holds MSC4140 delayed events.
	Delayed *delayed.Service
	// RTC advertises the LiveKit focus and mints LiveKit tokens; nil: neither.
	RTC *rtc.Service
	// Calls issues TURN credentials; nil: /voip/turnServer answers {}.
	Calls *calls.Service
}

type handlers struct {
	cfg       Config
	users     *users.Service
	rooms     *rooms.Service
	syncer    *clientsync.Service
	receipts  *receipts.Service
	typing    *typing.Service
	presence  *presence.Service
	e2ee      *e2ee.Service
	directory *directory.Service
	push      *push.Service
	social    *social.Service
	pushers   *pusher.Service
	search    *search.Service
	ss        *users.SharedSecret
	// appservices is nil when no application service is configured.
	appservices *appservice.Service
	// delayed is nil in tests that build the API without it.
	delayed *delayed.Service
	rtc     *rtc.Service
	// calls is nil when the server was built without it.
	calls *calls.Service
}

// Register adds the client API's routes to router.
func Register(router *mux.Router, api *httpapi.API, cfg Config, deps Deps) {
	h := &handlers{cfg: cfg, users: deps.Users, rooms: deps.Rooms, syncer: deps.Sync, receipts: deps.Receipts, typing: deps.Typing, presence: deps.Presence, e2ee: deps.E2EE, directory: deps.Directory, push: deps.Push, social: deps.Social, ss: deps.SharedSecret, appservices: deps.AppServices, pushers: deps.Pushers, search: deps.Search, delayed: deps.Delayed, rtc: deps.RTC, calls: deps.Calls}
	h.registerDelayed(router, api)
	h.registerRTC(router, api)

	router.Handle("/.well-known/matrix/client", get(api, h.wellKnownClient)).Methods(http.MethodGet)
	router.Handle("/.well-known/matrix/server", get(api, h.wellKnownServer)).Methods(http.MethodGet)
	router.Handle("/.well-known/matrix/support", get(api, h.wellKnownSupport)).Methods(http.MethodGet)
	api.Handle(router, http.MethodGet, "/_matrix/client/versions", h.versions)

	// r0 and v3 are the same API; Sytest and older clients still use r0.
	v3 := httpapi.Subrouter(router, "/_matrix/client/{version:(?:r0|v3)}")
	v1 := httpapi.Subrouter(router, "/_matrix/client/v1")

	api.Handle(v3, http.MethodGet, "/capabilities", h.capabilities, httpapi.Authed, httpapi.GuestsAllowed)

	api.Handle(v3, http.MethodPost, "/register", h.register, httpapi.RateLimited)
	api.Handle(v3, http.MethodGet, "/register/available", h.registerAvailable, httpapi.RateLimited)
	api.Handle(v1, http.MethodGet, "/register/m.login.registration_token/validity", h.registrationTokenValidity, httpapi.RateLimited)

	api.Handle(v3, http.MethodGet, "/login", h.loginFlows)
	api.Handle(v3, http.MethodPost, "/login", h.login, httpapi.RateLimited)
	api.Handle(v1, http.MethodPost, "/login/get_token", h.getLoginToken, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodPost, "/refresh", h.refresh, httpapi.RateLimited)
	// A locked account may still log out, and nothing else (spec, account locking).
	api.Handle(v3, http.MethodPost, "/logout", h.logout, httpapi.Authed, httpapi.GuestsAllowed, httpapi.LockedAllowed)
	api.Handle(v3, http.MethodPost, "/logout/all", h.logoutAll, httpapi.Authed, httpapi.GuestsAllowed, httpapi.LockedAllowed)

	api.Handle(v3, http.MethodGet, "/account/whoami", h.whoami, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodGet, "/voip/turnServer", h.turnServer, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPost, "/account/password", h.changePassword, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodPost, "/account/deactivate", h.deactivate, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodGet, "/account/3pid", h.threepids, httpapi.Authed)
	api.Handle(v3, http.MethodPost, "/users/{userId}/report", h.reportUser, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodGet, "/admin/whois/{userId}", h.whois, httpapi.Authed)

	api.Handle(v3, http.MethodGet, "/devices", h.devices, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodGet, "/devices/{deviceId}", h.device, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPut, "/devices/{deviceId}", h.renameDevice, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodDelete, "/devices/{deviceId}", h.deleteDevice, httpapi.Authed)
	api.Handle(v3, http.MethodPost, "/delete_devices", h.deleteDevices, httpapi.Authed)

	api.Handle(v3, http.MethodGet, "/profile/{userId}", h.profile, httpapi.OptionalAuth, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodGet, "/profile/{userId}/{field:(?:displayname|avatar_url)}", h.profileField, httpapi.OptionalAuth, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPut, "/profile/{userId}/{field:(?:displayname|avatar_url)}", h.setProfileField, httpapi.Authed, httpapi.GuestsAllowed, httpapi.RateLimited)

	api.Handle(v3, http.MethodGet, "/user/{userId}/account_data/{type}", h.accountData, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPut, "/user/{userId}/account_data/{type}", h.setAccountData, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodGet, "/user/{userId}/rooms/{roomId}/account_data/{type}", h.accountData, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPut, "/user/{userId}/rooms/{roomId}/account_data/{type}", h.setAccountData, httpapi.Authed, httpapi.GuestsAllowed)

	api.Handle(v3, http.MethodPost, "/user/{userId}/filter", h.createFilter, httpapi.Authed, httpapi.GuestsAllowed)
	api.Handle(v3, http.MethodPost, "/user/{userId}/openid/request_token", h.openIDToken, httpapi.Authed, httpapi.RateLimited)
	api.Handle(v3, http.MethodGet, "/user/{userId}/filter/{filterId}", h.filter, httpapi.Authed, httpapi.GuestsAllowed)

	h.registerRooms(v3, api)
	h.registerRoomReads(v3, v1, api)
	h.registerSync(router, v3, api)
	h.registerEphemeral(v3, api)
	h.registerKeys(v3, api)
	// Cross-signing shipped under the unstable prefix first; older clients (and
	// Sytest) still use it, and Synapse still serves it.
	registerDehydrated(router, api, h)
	unstable := httpapi.Subrouter(router, "/_matrix/client/unstable")
	api.Handle(unstable, http.MethodPost, "/keys/device_signing/upload", h.uploadCrossSigning, httpapi.Authed)
	api.Handle(unstable, http.MethodPost, "/keys/signatures/upload", h.uploadSignatures, httpapi.Authed)
	h.registerBackup(v3, api)
	h.registerTags(v3, api)
	h.registerPushRules(v3, api)
	h.registerAppServices(v3, v1, api)
	h.registerSocial(router, api)

	for _, r := range []users.AccountRestriction{users.Suspended, users.Locked} {
		path := "/admin/" + map[users.AccountRestriction]string{users.Suspended: "suspend", users.Locked: "lock"}[r] + "/{userId}"
		api.Handle(v1, http.MethodGet, path, h.accountRestriction(r), httpapi.Authed)
		api.Handle(v1, http.MethodPut, path, h.accountRestriction(r), httpapi.Authed)
	}
	h.registerPushers(v3, api)
	h.registerNotifications(v3, api)
	h.registerSearch(v3, api)

	synapse := httpapi.Subrouter(router, "/_synapse/admin/v1")
	api.Handle(synapse, http.MethodGet, "/register", h.sharedSecretNonce)
	api.Handle(synapse, http.MethodPost, "/register", h.sharedSecretRegister, httpapi.RateLimited)
	api.Handle(synapse, http.MethodGet, "/registration_tokens", h.listRegistrationTokens, httpapi.Authed)
	api.Handle(synapse, http.MethodPost, "/registration_tokens/new", h.newRegistrationToken, httpapi.Authed)
	api.Handle(synapse, http.MethodGet, "/registration_tokens/{token}", h.getRegistrationToken, httpapi.Authed)
	api.Handle(synapse, http.MethodPut, "/registration_tokens/{token}", h.updateRegistrationToken, httpapi.Authed)
	api.Handle(synapse, http.MethodDelete, "/registration_tokens/{token}", h.deleteRegistrationToken, httpapi.Authed)
}

// get serves a public JSON document outside the Matrix API prefix.
func get(api *httpapi.API, h httpapi.Handler) http.Handler {
	r := httpapi.NewRouter()
	api.Handle(r, http.MethodGet, "/{path:.*}", h)
	return r
}

// notFound maps the core's ErrNotFound to M_NOT_FOUND and passes other errors on.
func notFound(err error, what string) error {
	if errors.Is(err, users.ErrNotFound) {
		return mxerror.New(mxerror.NotFound, "%s not found", what)
	}
	return err
}

// selfOnly returns the caller's localpart if userID is the caller, else M_FORBIDDEN.
func (h *handlers) selfOnly(r *httpapi.Request) (string, error) {
	if r.Vars["userId"] != r.Caller.UserID {
		return "", mxerror.New(mxerror.Forbidden, "cannot act for another user")
	}
	return r.Caller.Localpart, nil
}
