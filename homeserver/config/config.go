// Package config holds Hongyan's one typed configuration: defaults, then a YAML file,
// then HONGYAN_* environment variables, then command-line flags, each overriding the
// one before.
//
// Every field has an environment variable named after its YAML path: database.url is
// HONGYAN_DATABASE_URL, rate_limit.enabled is HONGYAN_RATE_LIMIT_ENABLED. A few short aliases used by scripts (HONGYAN_RATE_LIMIT)
// are listed in aliases.
package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hongyan/hongyan/homeserver/outbound"
)

// Config is the whole server configuration. The zero value is not useful; start from
// Default.
type Config struct {
	// ServerName is the domain part of user IDs and room aliases, and the name other
	// servers know this one by. Changing it after users exist orphans them.
	ServerName string `yaml:"server_name"`
	// DataDir holds the SQLite database, the embedded NATS store, the signing key and
	// local media. Created on start.
	DataDir string `yaml:"data_dir"`
	// Listen is the client–server API's HOST:PORT.
	Listen string `yaml:"listen"`
	// PublicBaseURL is how clients reach the client API, advertised in
	// /.well-known/matrix/client. If empty, http://Listen is used.
	PublicBaseURL string `yaml:"public_base_url"`
	// SigningKeyPath is the server's ed25519 signing key file. If empty,
	// DataDir/signing.key, generated on first start.
	SigningKeyPath string `yaml:"signing_key_path"`
	// DefaultRoomVersion is the version of rooms created without one. Default "10".
	DefaultRoomVersion string `yaml:"default_room_version"`

	Database     Database     `yaml:"database"`
	NATS         NATS         `yaml:"nats"`
	Registration Registration `yaml:"registration"`
	Auth         Auth         `yaml:"auth"`
	RateLimit    RateLimit    `yaml:"rate_limit"`
	Limits       Limits       `yaml:"limits"`
	Media        Media        `yaml:"media"`
	Native       Native       `yaml:"native"`
	Federation   Federation   `yaml:"federation"`
	Log          Log          `yaml:"log"`
	Metrics      Metrics      `yaml:"metrics"`
	Presence     Presence     `yaml:"presence"`
	Support      Support      `yaml:"support"`

	// AppServiceConfigFiles are the registration files of the application
	// services (bridges, bots) this server talks to, in Synapse's format, which
	// every bridge writes (HONGYAN_APP_SERVICE_CONFIG_FILES: comma-separated). The
	// tokens stay in the files; a broken file stops the start with its name and
	// the field. Empty: no application services.
	AppServiceConfigFiles []string `yaml:"app_service_config_files"`
	// AppServiceInsecureSkipVerify accepts any TLS certificate from application
	// services with https URLs. Test networks only (Sytest's services present a
	// certificate of its own CA); logged loudly at start.
	AppServiceInsecureSkipVerify bool `yaml:"app_service_insecure_skip_verify"`

	Social Social `yaml:"social"`
	// UserDirectory configures /user_directory/search.
	UserDirectory UserDirectory `yaml:"user_directory"`
	Push          Push          `yaml:"push"`
	// DelayedEvents configures MSC4140 delayed events (homeserver/delayed).
	DelayedEvents DelayedEvents `yaml:"delayed_events"`
	// RTC configures what MatrixRTC clients (Element Call) discover and use.
	RTC RTC `yaml:"rtc"`
	// TURN configures /voip/turnServer and the embedded TURN/STUN server
	// (homeserver/calls).
	TURN TURN `yaml:"turn"`
}

// TURN configures the TURN credentials handed to VoIP clients and the embedded
// TURN/STUN server. Credentials follow coturn's use-auth-secret scheme
// (username "expiry:userID", password base64(HMAC-SHA1(secret, username))), so
// an external coturn configured with the same static-auth-secret accepts them.
type TURN struct {
	// SharedSecret is coturn's static-auth-secret. Empty with the embedded
	// server on: a random secret is made at each start (credentials handed out
	// before a restart then stop working). Empty with it off: /voip/turnServer
	// answers {} (no TURN), as Synapse does.
	SharedSecret string `yaml:"shared_secret" secret:"true"`
	// URIs are the turn:/turns:/stun: URIs clients are given. Empty: the embedded
	// server's, turn:HOST:PORT?transport=udp from Embedded.Listen (or its
	// RelayAddress when Listen's host is unspecified).
	URIs []string `yaml:"uris"`
	// TTL is how long a credential is valid. Default 24h.
	TTL time.Duration `yaml:"ttl"`
	// AllowPeerCIDRs is a comma-separated list of CIDR prefixes the embedded
	// server may relay to although they are loopback, private, link-local or
	// otherwise not public (coturn's allowed-peer-ip). The server's own relay
	// addresses are always allowed. Empty: public peers only, so the relay is no
	// way into the operator's network.
	AllowPeerCIDRs string       `yaml:"allow_peer_cidrs"`
	Embedded       TURNEmbedded `yaml:"embedded"`
}

// TURNEmbedded configures the TURN/STUN server `hongyan run` starts itself.
type TURNEmbedded struct {
	// Enabled turns the embedded server on. Unset: on when TURN.URIs is empty
	// (the quick start), off when URIs point at an external coturn.
	Enabled *bool `yaml:"enabled"`
	// Listen is the UDP HOST:PORT. Default 127.0.0.1:3478 (loopback: fine for
	// the quick start; a public deployment sets its public address).
	Listen string `yaml:"listen"`
	// RelayAddress is the IP relayed allocations are given and advertised at.
	// Empty: Listen's host (127.0.0.1 when that is unspecified).
	RelayAddress string `yaml:"relay_address"`
	// RelayMinPort and RelayMaxPort bound the UDP relay ports. Default
	// 49160–49200.
	RelayMinPort int `yaml:"relay_min_port"`
	RelayMaxPort int `yaml:"relay_max_port"`
	// UserQuota is how many allocations one user may hold at once. Default 10.
	UserQuota int `yaml:"user_quota"`
}

// TURNEmbeddedOn reports whether `hongyan run` starts the embedded TURN server.
func (c *Config) TURNEmbeddedOn() bool {
	if c.TURN.Embedded.Enabled != nil {
		return *c.TURN.Embedded.Enabled && c.TURN.Embedded.Listen != ""
	}
	return len(c.TURN.URIs) == 0 && c.TURN.Embedded.Listen != ""
}

// DelayedEvents configures MSC4140 delayed events.
type DelayedEvents struct {
	// MaxDelay is the longest delay a client may ask for. Default 24h (Synapse's);
	// 0 or less takes the default.
	MaxDelay time.Duration `yaml:"max_delay"`
}

// RTC configures MatrixRTC focus discovery (MSC4143) and the built-in LiveKit token
// service (MSC4195).
type RTC struct {
	// LiveKitServiceURL is the LiveKit focus advertised as rtc_foci in
	// /.well-known/matrix/client and by /rtc/transports: the base URL of a LiveKit
	// JWT service (this server's own /livekit/jwt when the key and secret below are
	// set). Empty: no focus is advertised.
	LiveKitServiceURL string `yaml:"livekit_service_url" secret:"url"`
	// LiveKitURL is the LiveKit SFU's WebSocket URL handed to clients with their
	// token (wss://...). Empty: the token service is off.
	LiveKitURL string `yaml:"livekit_url" secret:"url"`
	// LiveKitAPIKey and LiveKitAPISecret sign the LiveKit tokens; both must be set
	// for the token service to run.
	LiveKitAPIKey    string `yaml:"livekit_api_key" secret:"true"`
	LiveKitAPISecret string `yaml:"livekit_api_secret" secret:"true"`
	// LiveKitTokenTTL is how long a LiveKit token is valid. Default 1h.
	LiveKitTokenTTL time.Duration `yaml:"livekit_token_ttl"`
}

// Push configures delivery to push gateways.
type Push struct {
	// GatewayAllowCIDRs is a comma-separated list of CIDR prefixes push gateways
	// may be reached at although they are loopback, private or otherwise not
	// public (a gateway inside the deployment's network; 127.0.0.0/8,::1/128 for
	// tests and Sytest). Pusher URLs come from users, so by default only public
	// addresses are dialled. Empty: public addresses only.
	GatewayAllowCIDRs string `yaml:"gateway_allow_cidrs"`
	// GatewayInsecureSkipVerify accepts any TLS certificate from push gateways.
	// Test networks only (Sytest's gateway has a self-signed one): it is logged
	// loudly at start.
	GatewayInsecureSkipVerify bool `yaml:"gateway_insecure_skip_verify"`
}

// Social configures friends and groups (homeserver/social).
type Social struct {
	// MaxGroupMembers caps a group's joined plus invited members, on every
	// front-end (a Matrix client's /invite and /join too). Default 500; 0 or less
	// takes the default.
	MaxGroupMembers int `yaml:"max_group_members"`
}

// UserDirectory configures who /user_directory/search finds.
type UserDirectory struct {
	// SearchAllUsers finds every local user, not only those sharing a room with
	// the searcher or in a public room (Synapse's option of the same name).
	// Default false.
	SearchAllUsers bool `yaml:"search_all_users"`
}

// Support is what /.well-known/matrix/support tells people who need help with
// this server. With neither contacts nor a page the document is 404, as the spec
// allows.
type Support struct {
	// Contacts are the people to reach, each with a role (m.role.admin or
	// m.role.security) and a Matrix ID, an email address or both.
	Contacts []SupportContact `yaml:"contacts"`
	// Page is a URL of a page with help for this server's users.
	Page string `yaml:"page"`
}

// SupportContact is one entry of Support.Contacts.
type SupportContact struct {
	Role         string `yaml:"role" json:"role"`
	MatrixID     string `yaml:"matrix_id" json:"matrix_id,omitempty"`
	EmailAddress string `yaml:"email_address" json:"email_address,omitempty"`
}

// Federation configures the server–server API. It is off until Listen is set.
type Federation struct {
	// Listen is the federation listener's HOST:PORT, served over TLS; 8448 is the
	// port other servers assume when the server name has none. Empty: federation off.
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are PEM files for Listen. If empty, a self-signed
	// certificate is generated into DataDir — enough for test networks, where the
	// other servers skip verification; public federation needs a real certificate.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// InsecureSkipVerify (--federation-insecure) accepts any certificate from
	// other servers and lets federation and remote media reach loopback and
	// private addresses, so servers on one machine federate. Test networks only:
	// it is logged loudly at start.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// AllowCIDRs is a comma-separated list of CIDR prefixes that federation and
	// remote media may reach although they are loopback, private or otherwise
	// not public (a private deployment's network). Empty: public addresses only.
	AllowCIDRs string `yaml:"allow_cidrs"`
	// CAFile is a PEM file of certificate authorities trusted for other servers'
	// certificates besides the system's (a private federation's own CA).
	CAFile string `yaml:"ca_file"`
	// RetryMax bounds the backoff between attempts to reach a server that is down.
	// Default 10m.
	RetryMax time.Duration `yaml:"retry_max"`
	// PartialStateJoins joins other servers' rooms with partial state (MSC3706,
	// "faster joins"): the join returns without the member events, which are
	// fetched in the background; member lists wait for them, and syncs across
	// the completion send the room's whole state. Default on.
	PartialStateJoins bool `yaml:"partial_state_joins"`
	// RatePerSecond and RateBurst limit each other server's requests (0: no limit).
	// Defaults 50/s with bursts of 500: a busy server's transactions and a join's
	// reads fit, a misbehaving one is slowed.
	RatePerSecond float64 `yaml:"rate_per_second"`
	RateBurst     int     `yaml:"rate_burst"`
	// TrustedKeyServers are notaries asked for a server's signing keys when the
	// server itself does not answer (it is down, or its key was rotated away):
	// events it signed stay verifiable. None by default.
	TrustedKeyServers []KeyServer `yaml:"trusted_key_servers"`
}

// KeyServer is a notary (/_matrix/key/v2/query) trusted to vouch for other
// servers' keys.
type KeyServer struct {
	ServerName string `yaml:"server_name"`
	// VerifyKeys are the notary's own keys by ID (base64 ed25519), which its
	// answers must be signed with. If empty, its key is fetched from it on first
	// use and trusted from then on (logged).
	VerifyKeys map[string]string `yaml:"verify_keys"`
}

// Native configures the native protocol's listeners. Its WebSocket transport is
// always served on the client API's listener at /_hongyan/native.
type Native struct {
	// Listen is the plain TCP listener's HOST:PORT; "off" turns it off.
	Listen string `yaml:"listen"`
	// TLSListen, if set, is a TLS listener's HOST:PORT.
	TLSListen string `yaml:"tls_listen"`
	// TLSCert and TLSKey are PEM files for TLSListen. If empty, a self-signed
	// certificate is generated into DataDir (for development and tests).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// MaxFrameBytes bounds an incoming frame. Default 8 MiB.
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	// IdleTimeout closes sessions that send nothing for this long. Default 90s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RetransmitAfter resends unacknowledged pushes after this long. Default 10s.
	RetransmitAfter time.Duration `yaml:"retransmit_after"`
	// TokenRecheck is how often heartbeats re-check a session's access token (a
	// logged-out device's session closes within it). Default 5m.
	TokenRecheck time.Duration `yaml:"token_recheck"`
	// MaxUnacked bounds a session's unacknowledged pushes; past it the session is
	// closed as a slow consumer (the client resumes later). Default 2000.
	MaxUnacked int `yaml:"max_unacked"`
}

// Media configures the media repository.
type Media struct {
	// Backend is "fs" (a local directory, the default) or "s3" (MinIO, AWS S3, ...).
	Backend string `yaml:"backend"`
	// Dir is the fs backend's directory. If empty, DataDir/media.
	Dir string `yaml:"dir"`
	// MaxUploadBytes bounds one upload. Default 100 MiB.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// LegacyCutoff (RFC 3339): media uploaded before it stays reachable through the
	// unauthenticated /_matrix/media/v3 download and thumbnail endpoints. Empty:
	// none is, as the spec intends since v1.11.
	LegacyCutoff string `yaml:"legacy_cutoff"`
	// PreviewAllow is a comma-separated list of CIDR prefixes URL previews may reach
	// although they are private, loopback, link-local or otherwise not public.
	// Empty: public addresses only.
	PreviewAllow string `yaml:"preview_allow"`
	S3           S3     `yaml:"s3"`
}

// S3 is the s3 media backend's bucket.
type S3 struct {
	// Endpoint is HOST:PORT of the S3 API.
	Endpoint string `yaml:"endpoint"`
	Bucket   string `yaml:"bucket"`
	Prefix   string `yaml:"prefix"`
	// AccessKey is the key's ID, which identifies it like a user name.
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key" secret:"true"`
	// Secure selects HTTPS.
	Secure bool `yaml:"secure"`
}

// Database selects the SQL engine.
type Database struct {
	// URL is a postgres:// URL for PostgreSQL. If empty, SQLite in DataDir.
	URL string `yaml:"url" secret:"url"`
}

// NATS selects the event bus.
type NATS struct {
	// URL of an external NATS JetStream server or cluster (comma-separated). If empty,
	// a NATS server runs embedded in the process, storing in DataDir/nats. A user
	// name alone in it is a token (nats://TOKEN@host), so all of it is a secret.
	URL string `yaml:"url" secret:"userinfo"`
}

// Registration controls who may create accounts.
type Registration struct {
	// Enabled opens /register to everyone (true) or closes it (false). If unset,
	// registration is open only for a development server name (localhost,
	// 127.0.0.1 or [::1], with or without a port), never because of the listener:
	// a production server behind a reverse proxy listens on loopback too.
	Enabled *bool `yaml:"enabled"`
	// RequireToken makes registration need an m.login.registration_token stage.
	RequireToken bool `yaml:"require_token"`
	// Guests allows guest accounts (kind=guest).
	Guests bool `yaml:"guests"`
	// SharedSecret enables the Synapse-compatible /_synapse/admin/v1/register
	// endpoint used by bots and tools. If empty, that endpoint is off.
	SharedSecret string `yaml:"shared_secret" secret:"true"`
}

// Auth sets token lifetimes.
type Auth struct {
	// AccessTokenLifetime is how long an access token lives when the client asked for
	// a refresh token. Tokens of clients that did not are not expired.
	AccessTokenLifetime time.Duration `yaml:"access_token_lifetime"`
	// LoginTokenLifetime is how long an m.login.token stays valid.
	LoginTokenLifetime time.Duration `yaml:"login_token_lifetime"`
	// PasswordHashMemoryKiB and PasswordHashIterations are the argon2id cost.
	// The defaults are OWASP's recommendation (19 MiB, 2 iterations).
	PasswordHashMemoryKiB  int `yaml:"password_hash_memory_kib"`
	PasswordHashIterations int `yaml:"password_hash_iterations"`
}

// RateLimit configures the per-user and per-IP request limiter.
type RateLimit struct {
	// Enabled turns the limiter on. Benchmarks switch it off.
	Enabled bool `yaml:"enabled"`
	// PerSecond is the sustained request rate allowed per user or IP.
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many requests may arrive at once above the sustained rate.
	Burst int `yaml:"burst"`
}

// Limits bound what a request may carry.
type Limits struct {
	// MaxRequestBytes bounds a JSON request body.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
}

// Metrics configures the Prometheus metrics endpoint.
type Metrics struct {
	// Listen, if set, is a HOST:PORT of its own for /metrics, which is then not
	// served on the client API's listener. Empty: /metrics is on the client API's
	// listener, where anyone who reaches it can read it (fine on loopback, not on
	// a public address).
	Listen string `yaml:"listen"`
}

// Presence configures who sees whether users are online, in the spirit of
// Synapse's presence options.
type Presence struct {
	// Enabled records and shares presence. Off, presence updates are accepted and
	// dropped, everyone shows as offline and /sync carries no presence. Default on.
	Enabled bool `yaml:"enabled"`
	// VisibleTo is who may look up a user's presence (GET /presence/{userId}/status,
	// the native get_presence op): "shared_rooms" (the default, as Synapse: the user
	// and those who share a joined room with them) or "all" (any local user). /sync
	// carries the presence of room-mates either way.
	VisibleTo string `yaml:"visible_to"`
}

// The values of Presence.VisibleTo.
const (
	PresenceVisibleSharedRooms = "shared_rooms"
	PresenceVisibleAll         = "all"
)

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Default returns the embedded quick-start configuration.
func Default() Config {
	return Config{
		ServerName:         "localhost:8008",
		DataDir:            "./data",
		Listen:             "127.0.0.1:8008",
		DefaultRoomVersion: "10",
		Auth: Auth{
			AccessTokenLifetime:    time.Hour,
			LoginTokenLifetime:     2 * time.Minute,
			PasswordHashMemoryKiB:  19 * 1024,
			PasswordHashIterations: 2,
		},
		RateLimit:     RateLimit{Enabled: true, PerSecond: 10, Burst: 50},
		Limits:        Limits{MaxRequestBytes: 1 << 20},
		Media:         Media{Backend: "fs", MaxUploadBytes: 100 << 20},
		Native:        Native{Listen: "127.0.0.1:8009"},
		Federation:    Federation{RatePerSecond: 50, RateBurst: 500, PartialStateJoins: true},
		Log:           Log{Level: "info", Format: "text"},
		Presence:      Presence{Enabled: true, VisibleTo: PresenceVisibleSharedRooms},
		Social:        Social{MaxGroupMembers: 500},
		DelayedEvents: DelayedEvents{MaxDelay: 24 * time.Hour},
		RTC:           RTC{LiveKitTokenTTL: time.Hour},
		TURN: TURN{TTL: 24 * time.Hour, Embedded: TURNEmbedded{
			Listen: "127.0.0.1:3478", RelayMinPort: 49160, RelayMaxPort: 49200, UserQuota: 10}},
	}
}

// Load builds the configuration from defaults, the YAML file at path (if path is not
// empty) and the environment given as os.Environ-style pairs.
func Load(path string, environ []string) (Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// aliases are short environment names kept for scripts, mapped to the YAML path.
var aliases = map[string]string{
	"HONGYAN_RATE_LIMIT":   "rate_limit.enabled",
	"HONGYAN_REGISTRATION": "registration.enabled",
}

// applyEnv sets every field whose HONGYAN_* variable is present.
func applyEnv(cfg *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "HONGYAN_") {
			env[k] = v
		}
	}
	for name, path := range aliases {
		if v, ok := env[name]; ok {
			if err := Set(cfg, path, v); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return walk(reflect.ValueOf(cfg).Elem(), "", func(path string, _ reflect.Value) error {
		name := "HONGYAN_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
		if v, ok := env[name]; ok {
			if err := Set(cfg, path, v); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})
}

// walk calls fn for every leaf field with its dotted YAML path.
func walk(v reflect.Value, prefix string, fn func(path string, f reflect.Value) error) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			if err := walk(f, path, fn); err != nil {
				return err
			}
			continue
		}
		if err := fn(path, f); err != nil {
			return err
		}
	}
	return nil
}

// Set assigns the text value to the field at the dotted YAML path, parsing it for
// the field's type. It is how environment variables and flags reach the config.
func Set(cfg *Config, path, value string) error {
	var target reflect.Value
	_ = walk(reflect.ValueOf(cfg).Elem(), "", func(p string, f reflect.Value) error {
		if p == path {
			target = f
		}
		return nil
	})
	if !target.IsValid() {
		return fmt.Errorf("unknown setting %q", path)
	}
	return setValue(target, value)
}

var durationType = reflect.TypeOf(time.Duration(0))

func setValue(f reflect.Value, s string) error {
	if f.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: %w", s, err)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported setting type %s", f.Type())
		}
		// A list is comma-separated; an empty value is the empty list.
		var list []string
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		f.Set(reflect.ValueOf(list))
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		f.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		f.SetFloat(n)
	case reflect.Pointer:
		p := reflect.New(f.Type().Elem())
		if err := setValue(p.Elem(), s); err != nil {
			return err
		}
		f.Set(p)
	default:
		return fmt.Errorf("unsupported setting type %s", f.Type())
	}
	return nil
}

// Validate checks the settings and fills in the ones derived from others.
func (c *Config) Validate() error {
	if c.ServerName == "" {
		return errors.New("server_name must be set")
	}
	if strings.ContainsAny(c.ServerName, "/@:!#") && !validHostPort(c.ServerName) {
		return fmt.Errorf("server_name %q is not a valid host[:port]", c.ServerName)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: %w", c.Listen, err)
	}
	if err := c.validateTURN(); err != nil {
		return err
	}
	if c.DataDir == "" {
		return errors.New("data_dir must be set")
	}
	if c.SigningKeyPath == "" {
		c.SigningKeyPath = filepath.Join(c.DataDir, "signing.key")
	}
	if c.PublicBaseURL == "" {
		c.PublicBaseURL = "http://" + c.Listen
	}
	c.PublicBaseURL = strings.TrimSuffix(c.PublicBaseURL, "/")
	if c.Auth.PasswordHashMemoryKiB < 8 || c.Auth.PasswordHashIterations < 1 {
		return errors.New("auth.password_hash_memory_kib must be at least 8 and auth.password_hash_iterations at least 1")
	}
	if c.Limits.MaxRequestBytes <= 0 {
		return errors.New("limits.max_request_bytes must be positive")
	}
	for _, l := range []string{c.Native.Listen, c.Native.TLSListen} {
		if l == "" || l == "off" {
			continue
		}
		if _, _, err := net.SplitHostPort(l); err != nil {
			return fmt.Errorf("native listener %q: %w", l, err)
		}
	}
	if (c.Native.TLSCert == "") != (c.Native.TLSKey == "") {
		return errors.New("native.tls_cert and native.tls_key go together")
	}
	if l := c.Federation.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return fmt.Errorf("federation.listen %q: %w", l, err)
		}
	}
	for _, ks := range c.Federation.TrustedKeyServers {
		if ks.ServerName == "" {
			return errors.New("federation.trusted_key_servers: server_name is required")
		}
		for id, key := range ks.VerifyKeys {
			if raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(key, "=")); err != nil || len(raw) != ed25519.PublicKeySize {
				return fmt.Errorf("federation.trusted_key_servers: key %s of %s is not a base64 ed25519 public key", id, ks.ServerName)
			}
		}
	}
	for i, sc := range c.Support.Contacts {
		if sc.Role == "" || (sc.MatrixID == "" && sc.EmailAddress == "") {
			return fmt.Errorf("support.contacts[%d]: a role and a matrix_id or email_address are required", i)
		}
		if sc.MatrixID != "" && !strings.HasPrefix(sc.MatrixID, "@") {
			return fmt.Errorf("support.contacts[%d]: matrix_id %q is not a user ID", i, sc.MatrixID)
		}
	}
	if p := c.Support.Page; p != "" && !strings.HasPrefix(p, "https://") && !strings.HasPrefix(p, "http://") {
		return fmt.Errorf("support.page %q is not an http(s) URL", p)
	}
	if _, err := outbound.ParsePrefixes(c.Federation.AllowCIDRs); err != nil {
		return fmt.Errorf("federation.allow_cidrs: %w", err)
	}
	if _, err := outbound.ParsePrefixes(c.Media.PreviewAllow); err != nil {
		return fmt.Errorf("media.preview_allow: %w", err)
	}
	if _, err := outbound.ParsePrefixes(c.Push.GatewayAllowCIDRs); err != nil {
		return fmt.Errorf("push.gateway_allow_cidrs: %w", err)
	}
	if (c.Federation.TLSCert == "") != (c.Federation.TLSKey == "") {
		return errors.New("federation.tls_cert and federation.tls_key go together")
	}
	if c.Media.Dir == "" {
		c.Media.Dir = filepath.Join(c.DataDir, "media")
	}
	switch {
	case c.Media.MaxUploadBytes <= 0:
		return errors.New("media.max_upload_bytes must be positive")
	case c.Media.Backend != "fs" && c.Media.Backend != "s3":
		return fmt.Errorf("media.backend %q: want fs or s3", c.Media.Backend)
	case c.Media.Backend == "s3" && (c.Media.S3.Endpoint == "" || c.Media.S3.Bucket == ""):
		return errors.New("media.s3.endpoint and media.s3.bucket must be set for the s3 backend")
	}
	if c.Media.LegacyCutoff != "" {
		if _, err := time.Parse(time.RFC3339, c.Media.LegacyCutoff); err != nil {
			return fmt.Errorf("media.legacy_cutoff: %w", err)
		}
	}
	if c.RateLimit.Enabled && (c.RateLimit.PerSecond <= 0 || c.RateLimit.Burst <= 0) {
		return errors.New("rate_limit.per_second and rate_limit.burst must be positive when rate limiting is on")
	}
	if l := c.Metrics.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return fmt.Errorf("metrics.listen %q: %w", l, err)
		}
	}
	if v := c.Presence.VisibleTo; v != PresenceVisibleSharedRooms && v != PresenceVisibleAll {
		return fmt.Errorf("presence.visible_to %q: want %s or %s", v, PresenceVisibleSharedRooms, PresenceVisibleAll)
	}
	return nil
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") { // an IPv6 literal without a port
			ip := net.ParseIP(s[1 : len(s)-1])
			return ip != nil && ip.To4() == nil
		}
		return !strings.ContainsAny(s, "/@:!#")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return false
	}
	return host != "" && !strings.ContainsAny(host, "/@!#")
}

// RegistrationOpen reports whether anyone may register: as registration.enabled
// says, or, when it is unset, only for a development server name. The listener
// plays no part: a production server behind a reverse proxy listens on loopback.
func (c *Config) RegistrationOpen() bool {
	if c.Registration.Enabled != nil {
		return *c.Registration.Enabled
	}
	return DevelopmentServerName(c.ServerName)
}

// DevelopmentServerName reports whether name is one only this machine can own:
// localhost, 127.0.0.1 or [::1], with or without a port. No one else can have
// an account on such a server, so an open registration there harms no one.
func DevelopmentServerName(name string) bool {
	host := name
	if h, port, err := net.SplitHostPort(name); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return false
		}
		host = "[" + h + "]" // put back the brackets SplitHostPort takes off an IPv6 literal
		if !strings.Contains(h, ":") {
			host = h
		}
	}
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "[::1]":
		return true
	}
	return false
}

// YAML renders the configuration as YAML, for `hongyan config`, with every
// secret redacted (see Redacted).
func (c Config) YAML() ([]byte, error) {
	return yaml.Marshal(c.Redacted())
}

// validateTURN checks turn.* and fills in the defaults of unset numbers.
func (c *Config) validateTURN() error {
	t := &c.TURN
	if t.TTL <= 0 {
		t.TTL = 24 * time.Hour
	}
	if t.Embedded.UserQuota <= 0 {
		t.Embedded.UserQuota = 10
	}
	if t.Embedded.RelayMinPort == 0 && t.Embedded.RelayMaxPort == 0 {
		t.Embedded.RelayMinPort, t.Embedded.RelayMaxPort = 49160, 49200
	}
	if t.Embedded.RelayMinPort < 1 || t.Embedded.RelayMaxPort > 65535 || t.Embedded.RelayMinPort > t.Embedded.RelayMaxPort {
		return fmt.Errorf("turn.embedded relay ports %d-%d: want 1 <= min <= max <= 65535", t.Embedded.RelayMinPort, t.Embedded.RelayMaxPort)
	}
	if _, err := outbound.ParsePrefixes(t.AllowPeerCIDRs); err != nil {
		return fmt.Errorf("turn.allow_peer_cidrs: %w", err)
	}
	if c.TURNEmbeddedOn() {
		if _, _, err := net.SplitHostPort(t.Embedded.Listen); err != nil {
			return fmt.Errorf("turn.embedded.listen %q: %w", t.Embedded.Listen, err)
		}
		if t.Embedded.RelayAddress != "" && net.ParseIP(t.Embedded.RelayAddress) == nil {
			return fmt.Errorf("turn.embedded.relay_address %q is not an IP address", t.Embedded.RelayAddress)
		}
	}
	for _, u := range t.URIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") && !strings.HasPrefix(u, "stun:") {
			return fmt.Errorf("turn.uris: %q is not a turn:, turns: or stun: URI", u)
		}
	}
	return nil
}
