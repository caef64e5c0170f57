// Package federation is the server–server front-end: the key server, X-Matrix request
// authentication, the federation endpoints other homeservers call, joins through
// other servers, and the per-destination queues that send this server's events and
// EDUs out. Like every front-end it is thin: events go into homeserver/rooms, which
// holds the rules; this package checks what only federation has — signatures,
// origins, transactions — and turns wire formats into calls on the core.
package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/ratelimit"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/typing"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
	"github.com/hongyan/hongyan/media"
	"github.com/nats-io/nats.go"
)

// Config configures federation.
type Config struct {
	// ServerName is this server's name as other servers address it.
	ServerName string
	// Key signs requests, events and key documents.
	Key serverkey.Key
	// InsecureSkipVerify accepts any TLS certificate from other servers. For test
	// networks of self-signed servers only.
	InsecureSkipVerify bool
	// RetryMax bounds the backoff between attempts to reach a destination that is
	// down. Zero means 10 minutes.
	RetryMax time.Duration
	// PartialStateJoins asks resident servers for partial state when joining
	// (MSC3706): the join returns without the member events, which are fetched in
	// the background.
	PartialStateJoins bool
	// RatePerSecond and RateBurst limit each origin's requests (after their
	// signature is checked); past them an origin gets M_LIMIT_EXCEEDED. Zero
	// RatePerSecond means no limit.
	RatePerSecond float64
	RateBurst     int
	// TrustedKeyServers vouch for the keys of servers that do not answer.
	TrustedKeyServers []config.KeyServer
	// Guard dials every connection to other servers: federation requests,
	// well-known lookups, key and notary queries, media downloads and the
	// redirects of media downloads. Nil: a guard that admits global unicast
	// addresses only.
	Guard *outbound.Guard
	// RootCAs verify other servers' certificates. Nil: the system's.
	RootCAs *x509.CertPool
}

// Response size caps of federation requests. Media bodies are bounded again by
// the media repository's upload limit.
const (
	maxResponse     = 64 << 20
	maxSlowResponse = 512 << 20 // a large room's send_join or /state
)

// Deps are the core services federation calls.
type Deps struct {
	DB       *storage.DB
	Bus      *nats.Conn
	Rooms    *rooms.Service
	Users    *users.Service
	E2EE     *e2ee.Service
	Typing   *typing.Service
	Receipts *receipts.Service
	Presence *presence.Service
	// Media, if not nil, serves this server's media to others and fetches theirs.
	Media *media.Service
}

// Service is the federation front-end.
type Service struct {
	cfg    Config
	deps   Deps
	client fclient.FederationClient
	// slow is a client with a long timeout, for answers that are large to build.
	slow fclient.FederationClient
	// mediaClient downloads other servers' media (signed, long timeout, no JSON cap).
	mediaClient fclient.FederationClient
	// plain makes unsigned requests through the same discovery (media of servers
	// from before authenticated media).
	plain *fclient.Client
	// redirects follows the Location a remote server's media download names.
	redirects *http.Client
	keyRing   *gomatrixserverlib.KeyRing
	sender    *sender
	limiter   *ratelimit.Limiter // nil: no per-origin limit
	// keyLimiter limits the key endpoints per remote address: they are asked
	// unsigned, so there is no origin to limit by. Nil: no limit.
	keyLimiter *ratelimit.Limiter
	log        *slog.Logger

	// joins remembers the servers joined through lately (mayShareRoom).
	joins recentJoins

	// stopPrune ends pruneLoop; pruned is closed when it has returned.
	stopPrune context.CancelFunc
	pruned    chan struct{}
}

// New builds federation and starts its sender; Close stops it.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if cfg.RetryMax == 0 {
		cfg.RetryMax = 10 * time.Minute
	}
	s := &Service{cfg: cfg, deps: deps, log: slog.With("component", "federation")}
	if cfg.RatePerSecond > 0 {
		s.limiter = ratelimit.New(cfg.RatePerSecond, max(cfg.RateBurst, 1))
		s.keyLimiter = ratelimit.New(cfg.RatePerSecond, max(cfg.RateBurst, 1))
	}
	if cfg.InsecureSkipVerify {
		s.log.Warn("federation: NOT verifying other servers' TLS certificates, and reaching loopback and private addresses (federation.insecure_skip_verify); use this on test networks only")
	}
	identity := []*fclient.SigningIdentity{{
		ServerName: spec.ServerName(cfg.ServerName), KeyID: gomatrixserverlib.KeyID(cfg.Key.ID), PrivateKey: cfg.Key.PrivateKey,
	}}
	if cfg.Guard == nil {
		cfg.Guard = outbound.New(outbound.Policy{Purpose: "federation"})
		s.cfg.Guard = cfg.Guard
	}
	// Every client below sends through one transport, which resolves server
	// names and dials through the guard.
	tr := newMatrixTransport(cfg.Guard, cfg.InsecureSkipVerify, cfg.RootCAs)
	s.client = fclient.NewFederationClient(identity, fclient.WithTransport(outbound.CapBodies(tr, maxResponse)),
		fclient.WithTimeout(30*time.Second), fclient.WithUserAgent("Hongyan"))
	// A large room's send_join or /state answer takes the resident server a
	// while to build (Dendrite: over 30 s for 7 000 members): those wait longer.
	s.slow = fclient.NewFederationClient(identity, fclient.WithTransport(outbound.CapBodies(tr, maxSlowResponse)),
		fclient.WithTimeout(10*time.Minute), fclient.WithUserAgent("Hongyan"))
	// Media bodies are bounded by the media repository's upload limit as they
	// are stored, not by the JSON caps above.
	s.mediaClient = fclient.NewFederationClient(identity, fclient.WithTransport(tr), fclient.WithTimeout(2*time.Minute), fclient.WithUserAgent("Hongyan"))
	s.plain = fclient.NewClient(fclient.WithTransport(tr), fclient.WithTimeout(2*time.Minute), fclient.WithUserAgent("Hongyan"))
	// Media a remote server redirects to is fetched from wherever it says, so
	// through the guard, with bounded redirects.
	s.redirects = cfg.Guard.Client(2 * time.Minute)
	s.redirects.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: cfg.InsecureSkipVerify, RootCAs: cfg.RootCAs, // #nosec G402 -- test networks only, logged
		MinVersion: tls.VersionTLS12}
	store := &keyStore{db: deps.DB}
	// Our own key verifies our own events and requests without a round trip.
	if err := store.StoreKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{
		{ServerName: spec.ServerName(cfg.ServerName), KeyID: gomatrixserverlib.KeyID(cfg.Key.ID)}: {
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(cfg.Key.Public())},
			ValidUntilTS: spec.AsTimestamp(time.Now().Add(100 * 365 * 24 * time.Hour)),
		},
	}); err != nil {
		return nil, err
	}
	fetcher := &keyFetcher{s: s}
	for _, ks := range cfg.TrustedKeyServers {
		fetcher.notaries = append(fetcher.notaries, newNotary(ks))
	}
	s.keyRing = &gomatrixserverlib.KeyRing{
		KeyDatabase: store,
		KeyFetchers: []gomatrixserverlib.KeyFetcher{fetcher},
	}
	var err error
	if s.sender, err = newSender(ctx, s); err != nil {
		return nil, err
	}
	// Rooms joined with partial state before a restart carry on fetching the rest.
	partial, err := deps.Rooms.PartialStateRooms(ctx)
	if err != nil {
		s.sender.close()
		return nil, err
	}
	for _, p := range partial {
		s.completeLater(p)
	}
	deps.Rooms.SetRemote(s)
	deps.E2EE.SetRemote(s)
	deps.Users.SetRemote(s)
	if deps.Media != nil {
		deps.Media.SetRemote(s)
	}
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopPrune, s.pruned = stop, make(chan struct{})
	go func() {
		defer close(s.pruned)
		s.pruneLoop(pctx)
	}()
	return s, nil
}

// Close stops the sender and the pruning.
func (s *Service) Close() {
	s.stopPrune()
	<-s.pruned
	s.sender.close()
}

func (s *Service) isLocal(name spec.ServerName) bool { return string(name) == s.cfg.ServerName }

// Register adds the federation and key endpoints to router.
func (s *Service) Register(router *mux.Router, api *httpapi.API) {
	key := httpapi.Subrouter(router, "/_matrix/key/v2")
	api.Handle(key, http.MethodGet, "/server", s.keyLimited(s.getServerKeys))
	api.Handle(key, http.MethodGet, "/server/{keyID}", s.keyLimited(s.getServerKeys))
	api.Handle(key, http.MethodPost, "/query", s.keyLimited(s.notaryQuery))
	api.Handle(key, http.MethodGet, "/query/{serverName}", s.keyLimited(s.notaryQuery))
	api.Handle(key, http.MethodGet, "/query/{serverName}/{keyID}", s.keyLimited(s.notaryQuery))

	fed := httpapi.Subrouter(router, "/_matrix/federation")
	s.RegisterOpenID(router, api)
	api.Handle(fed, http.MethodGet, "/v1/version", func(*httpapi.Request) (any, error) {
		return map[string]any{"server": map[string]string{"name": "Hongyan", "version": "0.1"}}, nil
	})
	api.Handle(fed, http.MethodPut, "/v1/send/{txnId}", s.authed(s.send))
	api.Handle(fed, http.MethodGet, "/v1/make_join/{roomId}/{userId}", s.authed(s.makeJoin))
	api.Handle(fed, http.MethodPut, "/v2/send_join/{roomId}/{eventId}", s.authed(s.sendJoin))
	api.Handle(fed, http.MethodPut, "/v1/send_join/{roomId}/{eventId}", s.authed(v1(s.sendJoin)))
	api.Handle(fed, http.MethodGet, "/v1/make_leave/{roomId}/{userId}", s.authed(s.makeLeave))
	api.Handle(fed, http.MethodPut, "/v2/send_leave/{roomId}/{eventId}", s.authed(s.sendLeave))
	api.Handle(fed, http.MethodPut, "/v1/send_leave/{roomId}/{eventId}", s.authed(v1(s.sendLeave)))
	api.Handle(fed, http.MethodPut, "/v1/invite/{roomId}/{eventId}", s.authed(s.inviteV1))
	api.Handle(fed, http.MethodGet, "/v1/make_knock/{roomId}/{userId}", s.authed(s.makeKnock))
	api.Handle(fed, http.MethodPut, "/v1/send_knock/{roomId}/{eventId}", s.authed(s.sendKnock))
	api.Handle(fed, http.MethodGet, "/v1/publicRooms", s.authed(s.publicRooms))
	api.Handle(fed, http.MethodGet, "/v1/timestamp_to_event/{roomId}", s.authed(s.timestampToEvent))
	api.Handle(fed, http.MethodGet, "/v1/hierarchy/{roomId}", s.authed(s.hierarchy))
	api.Handle(fed, http.MethodPost, "/v1/publicRooms", s.authed(s.publicRooms))
	api.Handle(fed, http.MethodPut, "/v2/invite/{roomId}/{eventId}", s.authed(s.invite))
	api.Handle(fed, http.MethodGet, "/v1/event/{eventId}", s.authed(s.getEvent))
	api.Handle(fed, http.MethodGet, "/v1/state_ids/{roomId}", s.authed(s.stateIDs))
	api.Handle(fed, http.MethodGet, "/v1/state/{roomId}", s.authed(s.state))
	api.Handle(fed, http.MethodGet, "/v1/event_auth/{roomId}/{eventId}", s.authed(s.eventAuth))
	api.Handle(fed, http.MethodGet, "/v1/backfill/{roomId}", s.authed(s.backfill))
	api.Handle(fed, http.MethodPost, "/v1/get_missing_events/{roomId}", s.authed(s.missingEvents))
	api.Handle(fed, http.MethodGet, "/v1/query/profile", s.authed(s.queryProfile))
	api.Handle(fed, http.MethodGet, "/v1/query/directory", s.authed(s.queryDirectory))
	api.Handle(fed, http.MethodPost, "/v1/user/keys/query", s.authed(s.userKeysQuery))
	api.Handle(fed, http.MethodPost, "/v1/user/keys/claim", s.authed(s.userKeysClaim))
	api.Handle(fed, http.MethodGet, "/v1/user/devices/{userId}", s.authed(s.userDevices))
	if s.deps.Media != nil {
		api.Handle(fed, http.MethodGet, "/v1/media/download/{mediaId}", s.authed(s.mediaDownload))
		api.Handle(fed, http.MethodGet, "/v1/media/thumbnail/{mediaId}", s.authed(s.mediaThumbnail))
	}
}

// RegisterOpenID adds /_matrix/federation/v1/openid/userinfo to router. Third
// parties call it without signing (the token is the proof), and often on the client
// API's address, so it is served on both listeners.
func (s *Service) RegisterOpenID(router *mux.Router, api *httpapi.API) {
	api.Handle(httpapi.Subrouter(router, "/_matrix/federation/v1/openid"), http.MethodGet, "/userinfo", s.openIDUserInfo)
}

// openIDUserInfo says which user an OpenID token was issued to.
func (s *Service) openIDUserInfo(r *httpapi.Request) (any, error) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return nil, mxerror.New(mxerror.MissingToken, "access_token is required")
	}
	userID, err := s.deps.Users.OpenIDUser(r.Context(), token)
	if err != nil {
		if errors.Is(err, users.ErrNotFound) {
			return nil, mxerror.New(mxerror.UnknownToken, "unknown or expired OpenID token")
		}
		return nil, err
	}
	return map[string]string{"sub": userID}, nil
}

// v1 wraps a v2 handler's answer as the v1 endpoints have it: [200, answer].
func v1(h func(r *fedRequest) (any, error)) func(r *fedRequest) (any, error) {
	return func(r *fedRequest) (any, error) {
		res, err := h(r)
		if err != nil {
			return nil, err
		}
		return []any{200, res}, nil
	}
}

// fedRequest is an authenticated federation request.
type fedRequest struct {
	*httpapi.Request
	Origin string
	Body   []byte
}

// authed checks the X-Matrix signature of every request before the handler runs:
// the origin's key (fetched and cached) must sign method, URI, origin, destination
// and body.
func (s *Service) authed(h func(r *fedRequest) (any, error)) httpapi.Handler {
	return func(r *httpapi.Request) (any, error) {
		body, err := r.Body()
		if err != nil {
			return nil, err
		}
		r.Request.Body = io.NopCloser(bytes.NewReader(body))
		fr, resp := fclient.VerifyHTTPRequest(r.Request, time.Now(), spec.ServerName(s.cfg.ServerName), s.isLocal, s.keyRing)
		if fr == nil {
			msg := "request signature check failed"
			if m, ok := resp.JSON.(interface{ Error() string }); ok {
				msg = m.Error()
			} else if b, err := json.Marshal(resp.JSON); err == nil {
				msg = string(b)
			}
			if resp.Code == http.StatusBadRequest {
				return nil, mxerror.New(mxerror.BadJSON, "%s", msg)
			}
			return nil, mxerror.New(mxerror.Unauthorized, "%s", msg)
		}
		origin := string(fr.Origin())
		if s.limiter != nil {
			if ok, wait := s.limiter.Allow(origin); !ok {
				return nil, &mxerror.Error{Code: mxerror.LimitExceeded, Message: "too many requests from " + origin,
					RetryAfterMs: wait.Milliseconds() + 1}
			}
		}
		// A server that talks to us is up: send it what is waiting now.
		s.sender.alive(origin)
		return h(&fedRequest{Request: r, Origin: origin, Body: body})
	}
}

// roomVersionOf answers M_NOT_FOUND for rooms this server does not know.
func (s *Service) roomVersionOf(ctx context.Context, roomID string) (gomatrixserverlib.IRoomVersion, error) {
	v, err := s.deps.Rooms.RoomVersion(ctx, roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
	}
	return v, err
}

// requireInRoom refuses reads of rooms the origin has no member in.
func (s *Service) requireInRoom(ctx context.Context, roomID, origin string) error {
	if err := s.requireACL(ctx, roomID, origin); err != nil {
		return err
	}
	in, err := s.deps.Rooms.ServerInRoom(ctx, roomID, origin)
	if err != nil {
		return err
	}
	if !in {
		return mxerror.New(mxerror.Forbidden, "%s is not in room %s", origin, roomID)
	}
	return nil
}

// requireACL refuses servers the room's server ACL denies, and every other server
// when the room does not federate (m.federate false).
func (s *Service) requireACL(ctx context.Context, roomID, server string) error {
	ok, err := s.deps.Rooms.ServerAllowed(ctx, roomID, server)
	if err != nil {
		return err
	}
	if !ok {
		return mxerror.New(mxerror.Forbidden, "%s may not take part in %s (server ACL or m.federate)", server, roomID)
	}
	return nil
}

// verify checks an event's signatures (and, through parsing, its hashes) against
// the signing servers' keys.
func (s *Service) verify(ctx context.Context, ev gomatrixserverlib.PDU) error {
	if _, err := roomIDOf(ev); err != nil {
		return err // what gomatrixserverlib would panic on below
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keyRing, userIDForSender); err != nil {
		return fmt.Errorf("event %s: %w", ev.EventID(), err)
	}
	return nil
}

func timeNow() time.Time { return time.Now() }

func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

func pduJSONs(evs []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = json.RawMessage(ev.JSON())
	}
	return out
}

func eventIDs(evs []gomatrixserverlib.PDU) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID()
	}
	return out
}
