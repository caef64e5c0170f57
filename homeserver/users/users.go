// Package users holds accounts and everything that proves who a request comes from:
// devices, access and refresh tokens, login tokens, user-interactive auth, passwords,
// registration tokens; and what belongs to a user alone: profile, account data and
// sync filters.
package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/ratelimit"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// ErrNotFound is returned when the account, device, token or item asked for does not
// exist.
var ErrNotFound = errors.New("not found")

// Config configures the Service. Zero durations take the defaults given.
type Config struct {
	// ServerName is the domain of local user IDs.
	ServerName string
	// AccessTokenLifetime is how long tokens issued with a refresh token live.
	// Zero means one hour.
	AccessTokenLifetime time.Duration
	// LoginTokenLifetime is how long an m.login.token is valid. Zero means two minutes.
	LoginTokenLifetime time.Duration
	// RegistrationOpen lets anyone register; otherwise only the shared-secret admin
	// endpoint and `hongyan admin create-user` create accounts.
	RegistrationOpen bool
	// RequireRegistrationToken adds the m.login.registration_token stage.
	RequireRegistrationToken bool
	// GuestsAllowed enables kind=guest registration.
	GuestsAllowed bool
	// Hasher hashes passwords. The zero value uses argon2id with OWASP's parameters.
	Hasher Hasher
	// Bus, if not nil, is told about every account data write (AccountDataSubject)
	// and every revocation of devices' tokens (RevokedSubject).
	Bus *nats.Conn
	// ProfileChanged, if not nil, is called after a user's displayname or avatar
	// changed, so their member events can follow (the room engine does that).
	ProfileChanged func(ctx context.Context, userID string) error
	// DevicesDeleted, if not nil, is called after devices were deleted (logout,
	// device deletion, password change, deactivation), so their keys go too.
	DevicesDeleted func(ctx context.Context, userID string, deviceIDs []string) error
	// DevicesChanged, if not nil, is called after a login made or reused a device
	// or a device was renamed, so the user's device list moves for everyone who
	// tracks it (their own other devices included).
	DevicesChanged func(ctx context.Context, userID, deviceID string) error
	// Limiter, if not nil, limits password checks (login, and the password stage of
	// user-interactive auth) per account. The front-ends pass the limiter they
	// share, so one configuration and one budget govern an account everywhere;
	// the account's key is its own, apart from its user's requests.
	Limiter *ratelimit.Limiter
	// Reserved, if not nil, reports whether a user ID lies in an application
	// service's exclusive namespace: Available refuses it (M_EXCLUSIVE), so only
	// that service registers it.
	Reserved func(userID string) bool
}

// AccountDataSubject is the NATS subject an AccountDataNotice is published on.
const AccountDataSubject = "hongyan.users.account_data"

// AccountDataNotice says a user's account data changed at a stream position.
type AccountDataNotice struct {
	UserID    string `json:"user_id"`
	StreamPos int64  `json:"stream_pos"`
}

// Service is the accounts domain. It is safe for concurrent use.
type Service struct {
	db  *storage.DB
	cfg Config

	// hashSlots bounds concurrent password hashes: each argon2id hash holds its
	// memory cost, and more hashes than cores only queue inside the scheduler.
	hashSlots chan struct{}

	seenMu sync.Mutex
	seen   map[string]time.Time // device key → last time last_seen was written; guarded by seenMu

	// remote looks up other servers' users; nil without federation.
	remote Remote
}

// Remote looks up other servers' users. The federation front-end provides it
// (SetRemote), so this package never imports a front-end.
type Remote interface {
	// QueryProfile asks the user's server for their profile; ErrNotFound if none.
	QueryProfile(ctx context.Context, userID string) (Profile, error)
}

// SetRemote installs the way to look up other servers' users.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// RemoteProfile is another server's user's profile, asked of their server.
func (s *Service) RemoteProfile(ctx context.Context, userID string) (Profile, error) {
	if s.remote == nil {
		return Profile{}, ErrNotFound
	}
	return s.remote.QueryProfile(ctx, userID)
}

// New returns the service over db.
func New(db *storage.DB, cfg Config) *Service {
	if cfg.AccessTokenLifetime == 0 {
		cfg.AccessTokenLifetime = time.Hour
	}
	if cfg.LoginTokenLifetime == 0 {
		cfg.LoginTokenLifetime = 2 * time.Minute
	}
	return &Service{
		db:        db,
		cfg:       cfg,
		hashSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),
		seen:      map[string]time.Time{},
	}
}

// ServerName is the domain of local users.
func (s *Service) ServerName() string { return s.cfg.ServerName }

// UserID returns the full user ID of a local localpart.
func (s *Service) UserID(localpart string) string {
	return "@" + localpart + ":" + s.cfg.ServerName
}

// LocalpartOf returns the localpart of a user ID if it is local.
func (s *Service) LocalpartOf(userID string) (string, bool) {
	if !strings.HasPrefix(userID, "@") {
		return "", false
	}
	local, domain, ok := strings.Cut(userID[1:], ":")
	if !ok || domain != s.cfg.ServerName || local == "" {
		return "", false
	}
	return local, true
}

func now() int64 { return time.Now().UnixMilli() }

// randomToken returns a URL-safe random string of n random bytes.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is how tokens are stored: the SHA-256 of the token, so the database
// alone logs nobody in.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newDeviceID returns a random device ID of ten capital letters, as Synapse does.
func newDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
