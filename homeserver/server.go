// Package homeserver assembles Hongyan: it opens storage and the bus, builds the core
// services in dependency order, and mounts the front-ends on their listeners. It is
// the one composition root besides cmd/hongyan.
package homeserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hongyan/hongyan/clientapi"
	"github.com/hongyan/hongyan/federation"
	"github.com/hongyan/hongyan/homeserver/appservice"
	"github.com/hongyan/hongyan/homeserver/bus"
	"github.com/hongyan/hongyan/homeserver/calls"
	"github.com/hongyan/hongyan/homeserver/clientsync"
	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/delayed"
	"github.com/hongyan/hongyan/homeserver/directory"
	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/pusher"
	"github.com/hongyan/hongyan/homeserver/ratelimit"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/rtc"
	"github.com/hongyan/hongyan/homeserver/search"
	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/social"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/tlscert"
	"github.com/hongyan/hongyan/homeserver/typing"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/httpapi"
	"github.com/hongyan/hongyan/media"
	"github.com/hongyan/hongyan/media/mediahttp"
	"github.com/hongyan/hongyan/media/store"
	"github.com/hongyan/hongyan/native"
)

// Server is a running homeserver's parts.
type Server struct {
	Config   config.Config
	DB       *storage.DB
	Bus      *bus.Bus
	Key      serverkey.Key
	Users    *users.Service
	Rooms    *rooms.Service
	Sync     *clientsync.Service
	Receipts *receipts.Service
	Typing   *typing.Service
	Presence *presence.Service
	E2EE     *e2ee.Service
	Social   *social.Service
	// Delayed holds MSC4140 delayed events and fires them when due.
	Delayed *delayed.Service
	Media   *media.Service
	Native  *native.Server
	// AppServices holds the application services' registrations and their
	// sender (with no registrations, an empty one).
	AppServices *appservice.Service
	// Push holds push rules and evaluates every new event against them.
	Push *push.Service
	// Pushers stores pushers and delivers notifications to push gateways.
	Pushers *pusher.Service
	// Search indexes room events and answers /search.
	Search *search.Service
	// Federation is nil when federation is off.
	Federation *federation.Service
	// FederationGuard dials federation and remote media, PreviewGuard URL
	// previews (nil FederationGuard: federation is off). Tests read their
	// counters to prove a refused address was never dialled.
	FederationGuard, PreviewGuard *outbound.Guard
	// AppServiceGuard dials the application services' URLs.
	AppServiceGuard *outbound.Guard
	// PushGuard dials push gateways (push.gateway_allow_cidrs).
	PushGuard *outbound.Guard
	// Calls issues TURN credentials; TURN is the embedded TURN server, nil
	// until ListenTURN.
	Calls *calls.Service
	TURN  *calls.TURNServer

	// FederationMiddleware, if set before ListenFederation, wraps the federation
	// API's handler: tests use it to hold back requests of one kind.
	FederationMiddleware func(http.Handler) http.Handler

	notifier *clientsync.Notifier

	handler    http.Handler
	fedHandler http.Handler
	// metricsHandler serves /metrics on Config.Metrics.Listen; nil when /metrics
	// is on the client API's listener.
	metricsHandler http.Handler
}

// New opens everything the configuration names and builds the server. The caller
// must Close it.
func New(ctx context.Context, cfg config.Config) (s *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	// Registration files are read before anything is opened: a broken one stops
	// the start at once, naming the file and the field.
	regs, err := appservice.LoadFiles(cfg.AppServiceConfigFiles)
	if err != nil {
		return nil, err
	}
	s = &Server{Config: cfg}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.openStorage(ctx); err != nil {
		return nil, err
	}
	warnIfRegistrationOpen(cfg)
	// One limiter for every front-end: a user or an address has one budget whether
	// it speaks HTTP or the native protocol, and an account one for password checks.
	var limiter *ratelimit.Limiter
	if cfg.RateLimit.Enabled {
		limiter = ratelimit.New(cfg.RateLimit.PerSecond, cfg.RateLimit.Burst)
	}
	if err := s.buildCore(limiter); err != nil {
		return nil, err
	}
	if err := s.buildAppServices(ctx, regs); err != nil {
		return nil, err
	}
	if err := s.buildPushers(ctx); err != nil {
		return nil, err
	}
	router, api, err := s.buildClientAPI(ctx, limiter)
	if err != nil {
		return nil, err
	}
	if err := s.buildNative(router, limiter); err != nil {
		return nil, err
	}
	s.handler = httpapi.CORS(router)
	if cfg.Federation.Listen != "" {
		if err := s.buildFederation(ctx, router, api); err != nil {
			return nil, err
		}
	}
	if err := s.Social.Start(ctx); err != nil {
		return nil, err
	}
	s.Delayed.Start(ctx)
	return s, nil
}

// openStorage loads (or makes) the signing key, opens and migrates the database and
// starts the bus: everything below writes through one of them.
func (s *Server) openStorage(ctx context.Context) error {
	cfg := s.Config
	key, created, err := serverkey.LoadOrGenerate(cfg.SigningKeyPath)
	if err != nil {
		return err
	}
	if created {
		slog.Info("generated signing key", "path", cfg.SigningKeyPath, "key_id", key.ID)
	}
	s.Key = key

	if s.DB, err = storage.Open(ctx, cfg.Database.URL, cfg.DataDir); err != nil {
		return err
	}
	if _, err := s.DB.Migrate(ctx); err != nil {
		return err
	}
	if s.Bus, err = bus.Open(ctx, bus.Config{URL: cfg.NATS.URL, StoreDir: filepath.Join(cfg.DataDir, "nats")}); err != nil {
		return err
	}
	return nil
}

// warnIfRegistrationOpen says loudly, once at start, that anyone can make an account.
func warnIfRegistrationOpen(cfg config.Config) {
	if !cfg.RegistrationOpen() {
		return
	}
	why := "registration.enabled is true"
	if cfg.Registration.Enabled == nil {
		why = "the server name is a development one and registration.enabled is unset"
	}
	slog.Warn("REGISTRATION IS OPEN: anyone who reaches the client API can create an account; set registration.enabled: false to close it",
		"server_name", cfg.ServerName, "because", why)
}

// buildCore builds the services every front-end shares (users, rooms, receipts,
// typing, presence, e2ee, sync). None of them serves a request yet, so the
// callbacks between them may name services built after them.
func (s *Server) buildCore(limiter *ratelimit.Limiter) error {
	cfg := s.Config
	s.Users = users.New(s.DB, users.Config{
		Limiter:                  limiter,
		ServerName:               cfg.ServerName,
		AccessTokenLifetime:      cfg.Auth.AccessTokenLifetime,
		LoginTokenLifetime:       cfg.Auth.LoginTokenLifetime,
		RegistrationOpen:         cfg.RegistrationOpen(),
		RequireRegistrationToken: cfg.Registration.RequireToken,
		GuestsAllowed:            cfg.Registration.Guests,
		Bus:                      s.Bus.Conn,
		// Member events follow profile changes; rooms is built below, before any
		// request can arrive.
		ProfileChanged: func(ctx context.Context, userID string) error { return s.Rooms.RefreshMemberProfile(ctx, userID) },
		// A deleted device's keys, queued messages and pushers go with it.
		DevicesDeleted: func(ctx context.Context, userID string, deviceIDs []string) error {
			for _, d := range deviceIDs {
				if err := s.E2EE.DeviceDeleted(ctx, userID, d); err != nil {
					return err
				}
			}
			return s.Pushers.DeleteDevices(ctx, userID, deviceIDs)
		},
		// A new or renamed device moves the user's device list.
		DevicesChanged: func(ctx context.Context, userID, deviceID string) error {
			return s.E2EE.DeviceListChanged(ctx, userID, deviceID)
		},
		Hasher: users.Hasher{MemoryKiB: uint32(cfg.Auth.PasswordHashMemoryKiB), Time: uint32(cfg.Auth.PasswordHashIterations)},
		// Application services are built after users, before any request.
		Reserved: func(userID string) bool { return s.AppServices.UserReserved(userID) },
	})

	s.Rooms = rooms.New(s.DB, rooms.Config{
		ServerName:         cfg.ServerName,
		Key:                s.Key,
		DefaultRoomVersion: cfg.DefaultRoomVersion,
		Bus:                s.Bus.Conn,
		Profiles:           s.Users,
		Suspension:         s.Users,
		AliasReserved:      func(alias, creator string) bool { return s.AppServices.AliasReserved(alias, creator) },
		AliasMissing:       func(ctx context.Context, alias string) bool { return s.AppServices.QueryAlias(ctx, alias) },
		UserMissing:        func(ctx context.Context, userID string) { s.AppServices.AskAboutUser(ctx, userID) },
		// Delayed state events of other users for the same state are cancelled
		// by any state set; s.Delayed is built below, before any request arrives.
		StateWritten: func(ctx context.Context, roomID, typ, stateKey, sender string) {
			if err := s.Delayed.StateSet(ctx, roomID, typ, stateKey, sender); err != nil {
				slog.Warn("cancel delayed state events", "room", roomID, "type", typ, "err", err)
			}
		},
		// A group's size cap holds for every front-end's invites and joins;
		// social is built below, before any request can arrive.
		Gate: func(ctx context.Context, roomID string, m rooms.Membership) error {
			return s.Social.CheckMembership(ctx, roomID, m)
		},
		// Ignored users' events are hidden from their ignorers in every read.
		Ignored: func(ctx context.Context, userID string) (map[string]bool, error) {
			return s.Social.IgnoredSet(ctx, userID)
		},
		Guests:        s.Users,
		Erasures:      s.Users,
		UserRoomState: s.Users,
	})

	s.Receipts = receipts.New(s.DB, s.Bus.Conn)
	s.Delayed = delayed.New(delayed.Config{MaxDelay: cfg.DelayedEvents.MaxDelay}, s.DB, s.Rooms)
	var err error
	if s.Typing, err = typing.New(s.Bus.Conn); err != nil {
		return err
	}
	s.Presence = presence.New(s.DB, s.Bus.Conn, presence.Config{
		Disabled:     !cfg.Presence.Enabled,
		VisibleToAll: cfg.Presence.VisibleTo == config.PresenceVisibleAll,
	})
	s.E2EE = e2ee.New(s.DB, s.Bus.Conn)
	s.Push = push.New(push.Deps{DB: s.DB, Users: s.Users, Rooms: s.Rooms, Receipts: s.Receipts, Bus: s.Bus.Conn, ServerName: cfg.ServerName})
	if err := s.Push.Start(context.Background()); err != nil {
		return err
	}
	s.Search = search.New(search.Deps{DB: s.DB, Rooms: s.Rooms, Bus: s.Bus.Conn})
	if err := s.Search.Start(context.Background()); err != nil {
		return err
	}
	s.Calls = calls.New(cfg)
	s.Social = social.New(social.Config{ServerName: cfg.ServerName, MaxGroupMembers: cfg.Social.MaxGroupMembers, Bus: s.Bus.Conn},
		social.Deps{DB: s.DB, Rooms: s.Rooms, Users: s.Users, Presence: s.Presence, Push: s.Push})
	notifier, err := clientsync.NewNotifier(s.Bus.Conn, rooms.NoticeSubject, rooms.StateCompletedSubject, users.AccountDataSubject, receipts.Subject, typing.Subject, presence.Subject, e2ee.Subject, push.LateSubject)
	if err != nil {
		return err
	}
	s.notifier = notifier
	s.Sync = clientsync.New(clientsync.Deps{DB: s.DB, Rooms: s.Rooms, Users: s.Users, Receipts: s.Receipts, Typing: s.Typing, Presence: s.Presence, E2EE: s.E2EE, Notifier: notifier, Push: s.Push})
	return nil
}

// buildPushers starts delivery to push gateways, reading the notifications
// stream of the push rule evaluator.
func (s *Server) buildPushers(ctx context.Context) error {
	allow, _ := outbound.ParsePrefixes(s.Config.Push.GatewayAllowCIDRs) // validated
	s.PushGuard = outbound.New(outbound.Policy{Purpose: "push gateway", Allow: allow})
	var err error
	if s.Config.Push.GatewayInsecureSkipVerify {
		slog.Warn("PUSH GATEWAY CERTIFICATES ARE NOT VERIFIED (push.gateway_insecure_skip_verify): test networks only")
	}
	s.Pushers, err = pusher.New(ctx, pusher.Config{Guard: s.PushGuard, InsecureSkipVerify: s.Config.Push.GatewayInsecureSkipVerify},
		pusher.Deps{DB: s.DB, Rooms: s.Rooms, Source: s.Push, Receipts: s.Receipts, Bus: s.Bus.Conn})
	if err != nil {
		return fmt.Errorf("pushers: %w", err)
	}
	return nil
}

// buildAppServices starts the application services' sender and makes sure
// each service's own user exists.
//
// Their URLs are dialled through a guard of their own: an operator-written URL
// is trusted as written, so loopback and private addresses (a bridge beside the
// server, the usual set-up) are reachable, and redirects are never followed, so
// nothing a service or a user says can point the hs_token elsewhere.
func (s *Server) buildAppServices(ctx context.Context, regs []*appservice.Registration) error {
	cfg := s.Config
	if cfg.AppServiceInsecureSkipVerify {
		slog.Warn("APPLICATION SERVICE TLS CERTIFICATES ARE NOT VERIFIED (app_service_insecure_skip_verify): test networks only")
	}
	var err error
	s.AppServiceGuard = outbound.Trusted("application service")
	s.AppServices, err = appservice.New(ctx, appservice.Config{
		ServerName: cfg.ServerName, Registrations: regs, Guard: s.AppServiceGuard,
		InsecureSkipVerify: cfg.AppServiceInsecureSkipVerify, RetryMax: cfg.Federation.RetryMax,
	}, appservice.Deps{DB: s.DB, Bus: s.Bus.Conn, Rooms: s.Rooms, Users: s.Users, Typing: s.Typing, Receipts: s.Receipts, E2EE: s.E2EE})
	if err != nil {
		return fmt.Errorf("application services: %w", err)
	}
	for _, r := range regs {
		slog.Info("application service", "appservice", r)
	}
	return nil
}

// buildClientAPI mounts the Matrix client API, metrics and media on a new router
// and returns it with the API settings the other front-ends share.
func (s *Server) buildClientAPI(ctx context.Context, limiter *ratelimit.Limiter) (*mux.Router, *httpapi.API, error) {
	cfg := s.Config
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	api := &httpapi.API{
		Auth:         s.Users,
		AppServices:  s.AppServices,
		MaxBodyBytes: cfg.Limits.MaxRequestBytes,
		Metrics:      httpapi.NewMetrics(reg),
	}
	api.Limiter = limiter
	router := httpapi.NewRouter()
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if cfg.Metrics.Listen == "" {
		// Today's default: on the client API's listener, for anyone who reaches it.
		router.Handle("/metrics", metrics).Methods(http.MethodGet)
	} else {
		metricsMux := http.NewServeMux()
		metricsMux.Handle("GET /metrics", metrics)
		s.metricsHandler = metricsMux
	}
	clientapi.Register(router, api, clientapi.Config{
		ServerName:         cfg.ServerName,
		PublicBaseURL:      cfg.PublicBaseURL,
		DefaultRoomVersion: cfg.DefaultRoomVersion,
		Support:            cfg.Support,
	}, clientapi.Deps{
		Calls:        s.Calls,
		Users:        s.Users,
		Rooms:        s.Rooms,
		Sync:         s.Sync,
		Receipts:     s.Receipts,
		Typing:       s.Typing,
		Presence:     s.Presence,
		E2EE:         s.E2EE,
		Directory:    directory.New(s.DB, directory.Config{ServerName: cfg.ServerName, SearchAllUsers: cfg.UserDirectory.SearchAllUsers, Users: s.Users}),
		Push:         s.Push,
		Pushers:      s.Pushers,
		Search:       s.Search,
		Social:       s.Social,
		SharedSecret: users.NewSharedSecret(cfg.Registration.SharedSecret),
		AppServices:  s.AppServices,
		Delayed:      s.Delayed,
		RTC:          rtc.New(cfg.RTC, s.Rooms),
	})
	var err error
	if s.Media, err = newMedia(ctx, cfg, s.DB); err != nil {
		return nil, nil, err
	}
	previewAllow, _ := outbound.ParsePrefixes(cfg.Media.PreviewAllow) // validated
	s.PreviewGuard = outbound.New(outbound.Policy{Purpose: "url preview", Allow: previewAllow})
	mediahttp.Register(router, api, s.Media, media.NewPreviewer(s.PreviewGuard))
	return router, api, nil
}

// buildNative builds the native protocol and mounts its WebSocket on router.
func (s *Server) buildNative(router *mux.Router, limiter *ratelimit.Limiter) error {
	cfg := s.Config
	var err error
	s.Native, err = native.New(native.Config{ServerName: cfg.ServerName, MaxFrame: cfg.Native.MaxFrameBytes,
		IdleTimeout: cfg.Native.IdleTimeout, RetransmitAfter: cfg.Native.RetransmitAfter, MaxUnacked: cfg.Native.MaxUnacked,
		TokenRecheck:  cfg.Native.TokenRecheck,
		RatePerSecond: rateIf(cfg.RateLimit.Enabled, cfg.RateLimit.PerSecond), RateBurst: cfg.RateLimit.Burst},
		native.Deps{Limiter: limiter, Pushers: s.Pushers, Social: s.Social, Rooms: s.Rooms, Users: s.Users, Typing: s.Typing, Receipts: s.Receipts, Presence: s.Presence, Media: s.Media, Bus: s.Bus.Conn})
	if err != nil {
		return fmt.Errorf("native protocol: %w", err)
	}
	router.Handle("/_hongyan/native", s.Native.WebSocket())
	return nil
}

// buildFederation builds the federation service with its own router (served by
// ServeFederation) and mounts the OpenID userinfo endpoint on the client router.
func (s *Server) buildFederation(ctx context.Context, router *mux.Router, api *httpapi.API) error {
	cfg := s.Config
	fedAllow, _ := outbound.ParsePrefixes(cfg.Federation.AllowCIDRs) // validated
	s.FederationGuard = outbound.New(outbound.Policy{Purpose: "federation", Allow: fedAllow, Internal: cfg.Federation.InsecureSkipVerify})
	roots, err := federationRoots(cfg.Federation.CAFile)
	if err != nil {
		return err
	}
	s.Federation, err = federation.New(ctx, federation.Config{
		Guard: s.FederationGuard, RootCAs: roots,
		ServerName: cfg.ServerName, Key: s.Key,
		InsecureSkipVerify: cfg.Federation.InsecureSkipVerify, RetryMax: cfg.Federation.RetryMax,
		RatePerSecond: rateIf(cfg.RateLimit.Enabled, cfg.Federation.RatePerSecond), RateBurst: cfg.Federation.RateBurst,
		PartialStateJoins: cfg.Federation.PartialStateJoins, TrustedKeyServers: cfg.Federation.TrustedKeyServers,
	}, federation.Deps{DB: s.DB, Bus: s.Bus.Conn, Rooms: s.Rooms, Users: s.Users, E2EE: s.E2EE, Typing: s.Typing, Receipts: s.Receipts, Presence: s.Presence, Media: s.Media})
	if err != nil {
		return fmt.Errorf("federation: %w", err)
	}
	fedRouter := httpapi.NewRouter()
	fedAPI := &httpapi.API{MaxBodyBytes: cfg.Limits.MaxRequestBytes, Metrics: api.Metrics}
	s.Federation.Register(fedRouter, fedAPI)
	s.Federation.RegisterOpenID(router, api)
	s.fedHandler = fedRouter
	return nil
}

// ListenFederation opens the federation TLS listener, if configured, and serves it
// until ctx ends. It returns its address, or "" when federation is off.
func (s *Server) ListenFederation(ctx context.Context) (string, error) {
	if s.Config.Federation.Listen == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", s.Config.Federation.Listen)
	if err != nil {
		return "", fmt.Errorf("federation listen: %w", err)
	}
	return s.ServeFederation(ctx, ln)
}

// ServeFederation serves the federation API on ln, a plain TCP listener the caller
// has bound, with TLS added here, until ctx ends, and returns its https URL. It is
// ListenFederation for a caller that binds first: a test binds 127.0.0.1:0 and keeps
// the socket, so no other process can take the port between choosing and serving.
// ln is closed when serving ends, or at once on error.
func (s *Server) ServeFederation(ctx context.Context, ln net.Listener) (string, error) {
	if s.fedHandler == nil {
		ln.Close()
		return "", errors.New("federation listen: federation is off (federation.listen is empty)")
	}
	certFile, keyFile := s.Config.Federation.TLSCert, s.Config.Federation.TLSKey
	if certFile == "" {
		certFile, keyFile = filepath.Join(s.Config.DataDir, "federation-tls.crt"), filepath.Join(s.Config.DataDir, "federation-tls.key")
	}
	host, _, _ := net.SplitHostPort(s.Config.Federation.Listen)
	serverHost, _, err := net.SplitHostPort(s.Config.ServerName)
	if err != nil {
		serverHost = s.Config.ServerName
	}
	cert, err := tlscert.LoadOrGenerate(certFile, keyFile, []string{host, "localhost", "127.0.0.1", serverHost})
	if err != nil {
		ln.Close()
		return "", fmt.Errorf("federation TLS certificate: %w", err)
	}
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	h := s.fedHandler
	if s.FederationMiddleware != nil {
		h = s.FederationMiddleware(h)
	}
	go serveHTTP(ctx, tln, h)
	return "https://" + ln.Addr().String(), nil
}

// ListenMetrics opens metrics.listen, if configured, and serves /metrics there
// until ctx ends. It returns the endpoint's URL, or "" when /metrics is on the
// client API's listener instead.
func (s *Server) ListenMetrics(ctx context.Context) (string, error) {
	if s.metricsHandler == nil {
		return "", nil
	}
	ln, err := net.Listen("tcp", s.Config.Metrics.Listen)
	if err != nil {
		return "", fmt.Errorf("metrics listen: %w", err)
	}
	return s.ServeMetrics(ctx, ln)
}

// ServeMetrics serves /metrics on ln, a listener the caller has bound, until ctx
// ends, and returns the endpoint's URL: ListenMetrics for a caller that binds first.
// ln is closed when serving ends, or at once on error.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) (string, error) {
	if s.metricsHandler == nil {
		ln.Close()
		return "", errors.New("metrics listen: /metrics is on the client API's listener (metrics.listen is empty)")
	}
	go serveHTTP(ctx, ln, s.metricsHandler)
	return "http://" + ln.Addr().String() + "/metrics", nil
}

// newMedia opens the configured media backend and builds the repository.
func newMedia(ctx context.Context, cfg config.Config, db *storage.DB) (*media.Service, error) {
	var backend store.Backend
	var err error
	switch cfg.Media.Backend {
	case "s3":
		c := cfg.Media.S3
		backend, err = store.NewS3(ctx, store.S3Config{Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix,
			AccessKey: c.AccessKey, SecretKey: c.SecretKey, Secure: c.Secure})
	default:
		backend, err = store.NewFS(cfg.Media.Dir)
	}
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(cfg.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("media temp dir: %w", err)
	}
	var cutoff time.Time
	if cfg.Media.LegacyCutoff != "" {
		cutoff, _ = time.Parse(time.RFC3339, cfg.Media.LegacyCutoff) // validated
	}
	return media.New(db, backend, media.Config{ServerName: cfg.ServerName, MaxUploadBytes: cfg.Media.MaxUploadBytes,
		TempDir: tmp, LegacyCutoff: cutoff}), nil
}

// federationRoots is the system's certificate pool plus the CAs in caFile, or
// nil (the system's alone) when caFile is empty.
func federationRoots(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("federation.ca_file: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("federation.ca_file %s: no PEM certificates", caFile)
	}
	return roots, nil
}

func rateIf(on bool, perSecond float64) float64 {
	if !on {
		return 0
	}
	return perSecond
}

// ListenNative opens the configured native-protocol listeners (TCP and TLS) and
// serves them until ctx ends. It returns their addresses.
func (s *Server) ListenNative(ctx context.Context) ([]string, error) {
	var addrs []string
	if l := s.Config.Native.Listen; l != "" && l != "off" {
		ln, err := net.Listen("tcp", l)
		if err != nil {
			return nil, fmt.Errorf("native listen: %w", err)
		}
		addrs = append(addrs, s.ServeNative(ctx, ln))
	}
	if l := s.Config.Native.TLSListen; l != "" {
		ln, err := net.Listen("tcp", l)
		if err != nil {
			return nil, fmt.Errorf("native TLS listen: %w", err)
		}
		addr, err := s.ServeNativeTLS(ctx, ln)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

// ServeNative serves the native protocol in plain TCP on ln, a listener the caller
// has bound, until ctx ends, and returns its tcp:// address: ListenNative for a
// caller that binds first. ln is closed when serving ends.
func (s *Server) ServeNative(ctx context.Context, ln net.Listener) string {
	go s.Native.Serve(ctx, ln)
	return "tcp://" + ln.Addr().String()
}

// ServeNativeTLS serves the native protocol on ln, a plain TCP listener the caller
// has bound, with TLS added here, until ctx ends, and returns its tls:// address.
// ln is closed when serving ends, or at once on error.
func (s *Server) ServeNativeTLS(ctx context.Context, ln net.Listener) (string, error) {
	certFile, keyFile := s.Config.Native.TLSCert, s.Config.Native.TLSKey
	if certFile == "" {
		certFile, keyFile = filepath.Join(s.Config.DataDir, "native-tls.crt"), filepath.Join(s.Config.DataDir, "native-tls.key")
	}
	host, _, _ := net.SplitHostPort(s.Config.Native.TLSListen)
	cert, err := tlscert.LoadOrGenerate(certFile, keyFile, []string{host, "localhost", "127.0.0.1", s.Config.ServerName})
	if err != nil {
		ln.Close()
		return "", fmt.Errorf("native TLS certificate: %w", err)
	}
	go s.Native.Serve(ctx, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	return "tls://" + ln.Addr().String(), nil
}

// Handler is the client API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the client API on ln until ctx is cancelled, then shuts down
// gracefully: in-flight requests get up to 10 seconds to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return serveHTTP(ctx, ln, s.handler)
}

// serveHTTP serves h on ln until ctx is cancelled, then shuts down gracefully.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(shutdownCtx)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}

// ListenTURN starts the embedded TURN/STUN server on turn.embedded.listen when
// it is on (see config.TURNEmbeddedOn) and returns its address, or "" when it
// is off. Close stops it.
func (s *Server) ListenTURN(ctx context.Context) (string, error) {
	if !s.Config.TURNEmbeddedOn() {
		return "", nil
	}
	t, err := s.Calls.StartTURN(ctx, s.Config, "")
	if err != nil {
		return "", err
	}
	s.TURN = t
	return t.Addr().String(), nil
}

// Close releases the bus and the database.
func (s *Server) Close() {
	if s.TURN != nil {
		s.TURN.Close()
	}
	if s.Federation != nil {
		s.Federation.Close()
	}
	if s.Native != nil {
		s.Native.Close()
	}
	if s.AppServices != nil {
		s.AppServices.Close()
	}
	if s.Social != nil {
		s.Social.Close()
	}
	if s.Search != nil {
		s.Search.Close()
	}
	if s.Delayed != nil {
		s.Delayed.Close()
	}
	if s.Pushers != nil {
		s.Pushers.Close()
	}
	if s.notifier != nil {
		s.notifier.Close()
	}
	if s.Push != nil {
		s.Push.Close()
	}
	if s.Typing != nil {
		s.Typing.Close()
	}
	if s.Bus != nil {
		s.Bus.Close()
	}
	if s.DB != nil {
		s.DB.Close()
	}
}
