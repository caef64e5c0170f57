// Package calls holds the rules of Matrix VoIP calls: the TURN credentials
// clients get from /voip/turnServer, the embedded TURN/STUN server that accepts
// them, and the validation of m.call.* events.
//
// Credentials follow coturn's use-auth-secret scheme (the TURN REST API draft,
// draft-uberti-behave-turn-rest): the username is "expiry:userID" with expiry
// in Unix seconds, the password base64(HMAC-SHA1(secret, username)). An
// external coturn with the same static-auth-secret accepts them unchanged.
package calls

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what coturn's use-auth-secret checks.
	"encoding/base64"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
)

// Credentials is the answer of /voip/turnServer.
type Credentials struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	// TTL is in seconds, as the spec has it.
	TTL int64 `json:"ttl"`
}

// Service issues and checks TURN credentials. Its zero value is not useful;
// build it with New.
type Service struct {
	secret string
	uris   []string
	ttl    time.Duration
}

// New builds the service from turn.*. With no shared secret and the embedded
// server on, a random secret is made: the embedded server and the credentials
// it checks live in this process, so they agree.
func New(cfg config.Config) *Service {
	t := cfg.TURN
	s := &Service{secret: t.SharedSecret, uris: t.URIs, ttl: t.TTL}
	if s.ttl <= 0 {
		s.ttl = 24 * time.Hour
	}
	if cfg.TURNEmbeddedOn() {
		if s.secret == "" {
			b := make([]byte, 32)
			_, _ = rand.Read(b) // crypto/rand.Read never fails
			s.secret = hex.EncodeToString(b)
		}
		if len(s.uris) == 0 {
			s.uris = []string{"turn:" + advertised(t.Embedded) + "?transport=udp"}
		}
	}
	return s
}

// advertised is the HOST:PORT clients reach the embedded server at.
func advertised(e config.TURNEmbedded) string {
	host, port, _ := net.SplitHostPort(e.Listen) // validated
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = e.RelayAddress
		if host == "" {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// Enabled reports whether TURN is configured at all; without it
// /voip/turnServer answers {}.
func (s *Service) Enabled() bool { return s.secret != "" && len(s.uris) > 0 }

// Credentials issues a credential for userID valid from now for the TTL.
func (s *Service) Credentials(userID string, now time.Time) Credentials {
	username := strconv.FormatInt(now.Add(s.ttl).Unix(), 10) + ":" + userID
	return Credentials{Username: username, Password: Password(s.secret, username), URIs: s.uris, TTL: int64(s.ttl / time.Second)}
}

// Password is the coturn use-auth-secret password of username.
func Password(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// check returns the user a TURN username names and its password, or false when
// the username is malformed or expired at now. The password is derived, not
// compared: TURN's long-term credential mechanism proves knowledge of it
// through the MESSAGE-INTEGRITY key, so a forged username yields a key the
// client cannot match.
func (s *Service) check(username string, now time.Time) (userID, password string, ok bool) {
	exp, user, found := strings.Cut(username, ":")
	if !found || user == "" || !strings.HasPrefix(user, "@") {
		return "", "", false
	}
	expiry, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || now.Unix() > expiry {
		return "", "", false
	}
	return user, Password(s.secret, username), true
}
