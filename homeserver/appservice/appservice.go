// Package appservice is the application-service API's core: the registrations
// loaded from their files, who an application service may act as, the namespaces
// reserved for it, and the sender that pushes it the events of its namespaces in
// durable transactions. The HTTP edge (httpapi) resolves as_tokens through it, the
// client API asks it to register and log in a service's users, and the room engine
// and the accounts domain consult its exclusive namespaces through hooks the
// composition root wires.
package appservice

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/typing"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Config configures the Service.
type Config struct {
	// ServerName is the domain of local users and aliases.
	ServerName string
	// Registrations are the services, as LoadFiles returned them.
	Registrations []*Registration
	// Guard dials the services. Nil: outbound.Trusted("application service"),
	// since every URL it dials is one the operator wrote in a registration file.
	Guard *outbound.Guard
	// InsecureSkipVerify accepts any TLS certificate from the services (tests).
	InsecureSkipVerify bool
	// RetryMax bounds the backoff between attempts to reach a service that is
	// down. Zero means five minutes.
	RetryMax time.Duration
	// BatchSize bounds the events of one transaction. Zero means 100.
	BatchSize int
	// Log receives the sender's warnings. Nil means slog.Default().
	Log *slog.Logger
}

// Deps are the services the application-service core reads and writes through.
type Deps struct {
	DB       *storage.DB
	Bus      *nats.Conn
	Rooms    *rooms.Service
	Users    *users.Service
	Typing   *typing.Service
	Receipts *receipts.Service
	// E2EE, if not nil, hands over to-device messages for the devices of
	// services that manage them (MSC3202 with MSC2409).
	E2EE *e2ee.Service
}

// Service holds the registrations and runs their senders. It is safe for
// concurrent use.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	// byID and byToken never change after New. byToken is keyed by the SHA-256
	// of the as_token, so a lookup compares digests, not the secret itself.
	byID    map[string]*Registration
	byToken map[[32]byte]*Registration
	regs    []*Registration
	client  *http.Client

	sender *sender

	// queried remembers, per user ID or alias, when a service was last asked
	// about it, so a client cannot make the server ask again on every request.
	queriedMu sync.Mutex
	queried   map[string]time.Time
	// protocols caches third-party protocol metadata by protocol; queriedMu.
	protocols map[string]cachedProtocol
}

// New checks the registrations against the accounts (creating each service's
// sender user if missing) and starts the sender. The caller must Close it.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	s := &Service{cfg: cfg, deps: deps, log: cfg.Log, byID: map[string]*Registration{},
		byToken: map[[32]byte]*Registration{}, regs: cfg.Registrations, queried: map[string]time.Time{},
		protocols: map[string]cachedProtocol{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.cfg.RetryMax <= 0 {
		s.cfg.RetryMax = 5 * time.Minute
	}
	if s.cfg.BatchSize <= 0 {
		s.cfg.BatchSize = 100
	}
	guard := cfg.Guard
	if guard == nil {
		guard = outbound.Trusted("application service")
	}
	tr := guard.Transport()
	if cfg.InsecureSkipVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test networks only, logged at start
	}
	// No redirect is followed: the operator named the service's URL, and a
	// redirect would take the hs_token somewhere the operator did not.
	s.client = &http.Client{Transport: tr, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, r := range cfg.Registrations {
		s.byID[r.ID] = r
		s.byToken[sha256.Sum256([]byte(r.ASToken))] = r
		local := r.SenderLocalpart
		if err := deps.Users.ValidateLocalpart(local); err != nil {
			return nil, fmt.Errorf("application service %s (%s): sender_localpart %q: %w", r.ID, r.File, local, err)
		}
		_, err := deps.Users.Register(ctx, users.NewAccount{Localpart: local}, users.LoginOptions{}, true)
		var mx *mxerror.Error
		if err != nil && !(errors.As(err, &mx) && mx.Code == mxerror.UserInUse) {
			return nil, fmt.Errorf("application service %s: sender user: %w", r.ID, err)
		}
	}
	var err error
	if s.sender, err = newSender(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops the sender and waits for it.
func (s *Service) Close() {
	if s.sender != nil {
		s.sender.close()
	}
}

// Registrations lists the services.
func (s *Service) Registrations() []*Registration { return s.regs }

// Identify returns the ID of the service whose as_token token is.
func (s *Service) Identify(token string) (string, bool) {
	r, ok := s.byToken[sha256.Sum256([]byte(token))]
	if !ok {
		return "", false
	}
	return r.ID, true
}

// Unlimited reports whether service asID is exempt from rate limits
// (rate_limited: false).
func (s *Service) Unlimited(asID string) bool {
	r, ok := s.byID[asID]
	return ok && !r.RateLimited
}

// Assert resolves whom service asID acts as on one request (the spec's identity
// assertion): itself (its sender user) when userID is empty, else userID, which
// must be a local user of its user namespace that exists (M_FORBIDDEN
// otherwise), and, with deviceID, that user's device (MSC3202 / MSC4326).
func (s *Service) Assert(ctx context.Context, asID, userID, deviceID string) (users.Caller, error) {
	r, ok := s.byID[asID]
	if !ok {
		return users.Caller{}, mxerror.New(mxerror.UnknownToken, "unknown access token")
	}
	sender := r.SenderID(s.cfg.ServerName)
	if userID == "" {
		userID = sender
	}
	if userID != sender && !s.inUsers(r, userID) {
		return users.Caller{}, mxerror.New(mxerror.Forbidden, "application service cannot masquerade as %s: not in its namespace", userID)
	}
	local, ok := s.deps.Users.LocalpartOf(userID)
	if !ok {
		return users.Caller{}, mxerror.New(mxerror.Forbidden, "application service cannot masquerade as %s: not a local user", userID)
	}
	acct, err := s.deps.Users.Account(ctx, local)
	if errors.Is(err, users.ErrNotFound) || (err == nil && acct.Deactivated) {
		return users.Caller{}, mxerror.New(mxerror.Forbidden, "application service has not registered %s", userID)
	}
	if err != nil {
		return users.Caller{}, err
	}
	if deviceID != "" {
		if _, err := s.deps.Users.Device(ctx, local, deviceID); errors.Is(err, users.ErrNotFound) {
			return users.Caller{}, mxerror.New(mxerror.Forbidden, "%s has no device %s", userID, deviceID)
		} else if err != nil {
			return users.Caller{}, err
		}
	}
	return users.Caller{UserID: userID, Localpart: local, DeviceID: deviceID, IsAdmin: acct.IsAdmin,
		AppService: r.ID, Unlimited: !r.RateLimited}, nil
}

// inUsers reports whether userID is in r's user namespace.
func (s *Service) inUsers(r *Registration, userID string) bool {
	m, _ := matchAny(r.Users, userID)
	return m
}

// UserReserved reports whether userID belongs to a service's exclusive user
// namespace (or is a service's own user): nobody else may register it.
func (s *Service) UserReserved(userID string) bool {
	if s == nil {
		return false
	}
	for _, r := range s.regs {
		if _, excl := matchAny(r.Users, userID); excl || userID == r.SenderID(s.cfg.ServerName) {
			return true
		}
	}
	return false
}

// AliasReserved reports whether alias is in an exclusive alias namespace of a
// service that creator does not act for (its sender user or a user of its
// namespace).
func (s *Service) AliasReserved(alias, creator string) bool {
	if s == nil {
		return false
	}
	for _, r := range s.regs {
		if _, excl := matchAny(r.Aliases, alias); excl && creator != r.SenderID(s.cfg.ServerName) && !s.inUsers(r, creator) {
			return true
		}
	}
	return false
}

// Register creates localpart for service asID (m.login.application_service
// registration). The user must be in the service's user namespace: M_EXCLUSIVE
// otherwise, as the spec says.
func (s *Service) Register(ctx context.Context, asID, localpart string, login users.LoginOptions, inhibitLogin bool) (users.Session, error) {
	r, ok := s.byID[asID]
	if !ok {
		return users.Session{}, mxerror.New(mxerror.UnknownToken, "unknown access token")
	}
	if localpart == "" {
		return users.Session{}, mxerror.New(mxerror.MissingParam, "username is required")
	}
	if err := s.deps.Users.ValidateLocalpart(localpart); err != nil {
		return users.Session{}, err
	}
	userID := s.deps.Users.UserID(localpart)
	if !s.inUsers(r, userID) && userID != r.SenderID(s.cfg.ServerName) {
		return users.Session{}, mxerror.New(mxerror.Exclusive, "%s is not in the application service's namespace", userID)
	}
	for _, other := range s.regs {
		if _, excl := matchAny(other.Users, userID); excl && other != r {
			return users.Session{}, mxerror.New(mxerror.Exclusive, "%s is reserved by another application service", userID)
		}
	}
	return s.deps.Users.Register(ctx, users.NewAccount{Localpart: localpart}, login, inhibitLogin)
}

// Login opens a session for a user of service asID's namespace
// (m.login.application_service login).
func (s *Service) Login(ctx context.Context, asID, user string, opts users.LoginOptions) (users.Session, error) {
	r, ok := s.byID[asID]
	if !ok {
		return users.Session{}, mxerror.New(mxerror.UnknownToken, "unknown access token")
	}
	userID := user
	if !strings.HasPrefix(user, "@") {
		userID = s.deps.Users.UserID(user)
	}
	local, ok := s.deps.Users.LocalpartOf(userID)
	if !ok || (!s.inUsers(r, userID) && userID != r.SenderID(s.cfg.ServerName)) {
		return users.Session{}, mxerror.New(mxerror.Forbidden, "%s is not in the application service's namespace", userID)
	}
	return s.deps.Users.Login(ctx, local, opts)
}
