package users

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// maxPasswordLength bounds passwords so a hash cannot be made to chew on megabytes.
const maxPasswordLength = 512

// RegistrationFlows are the UIA flows that /register offers.
func (s *Service) RegistrationFlows() []Flow {
	if s.cfg.RequireRegistrationToken {
		return []Flow{{Stages: []string{StageRegistrationToken}}}
	}
	return []Flow{{Stages: []string{StageDummy}}}
}

// RegistrationOpen reports whether /register accepts new users at all.
func (s *Service) RegistrationOpen() bool { return s.cfg.RegistrationOpen }

// GuestsAllowed reports whether kind=guest registration is on.
func (s *Service) GuestsAllowed() bool { return s.cfg.GuestsAllowed }

// CheckNewPassword applies the password rules of registration and password change.
func CheckNewPassword(password string) error {
	if password == "" {
		return mxerror.New(mxerror.MissingParam, "password is required")
	}
	if len(password) > maxPasswordLength {
		return mxerror.New(mxerror.InvalidParam, "password may not be longer than %d bytes", maxPasswordLength)
	}
	return nil
}

// SharedSecret implements Synapse's shared-secret registration
// (/_synapse/admin/v1/register), which bots and provisioning tools use to create
// accounts without open registration. A nonce is single-use and lives one minute.
type SharedSecret struct {
	secret []byte

	mu     sync.Mutex
	nonces map[string]time.Time // guarded by mu
}

// NewSharedSecret returns the registrar for secret; an empty secret disables it.
func NewSharedSecret(secret string) *SharedSecret {
	if secret == "" {
		return nil
	}
	return &SharedSecret{secret: []byte(secret), nonces: map[string]time.Time{}}
}

// Nonce hands out a fresh nonce.
func (r *SharedSecret) Nonce() string {
	n := randomToken(24)
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.nonces {
		if time.Since(t) > time.Minute {
			delete(r.nonces, k)
		}
	}
	r.nonces[n] = time.Now()
	return n
}

// SharedSecretRequest is the body of a shared-secret registration.
type SharedSecretRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

// Verify consumes the nonce and checks the HMAC-SHA1 over
// nonce NUL username NUL password NUL admin|notadmin [NUL user_type].
func (r *SharedSecret) Verify(req SharedSecretRequest) error {
	r.mu.Lock()
	issued, ok := r.nonces[req.Nonce]
	delete(r.nonces, req.Nonce)
	r.mu.Unlock()
	if !ok || time.Since(issued) > time.Minute {
		return mxerror.New(mxerror.Unknown, "unrecognised nonce")
	}
	mac := hmac.New(sha1.New, r.secret)
	admin := "notadmin"
	if req.Admin {
		admin = "admin"
	}
	parts := []string{req.Nonce, req.Username, req.Password, admin}
	if req.UserType != "" {
		parts = append(parts, req.UserType)
	}
	mac.Write([]byte(strings.Join(parts, "\x00")))
	want := mac.Sum(nil)
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return mxerror.New(mxerror.Unknown, "HMAC incorrect")
	}
	return nil
}

// RegisterWithSharedSecret creates an account for a verified shared-secret request.
func (s *Service) RegisterWithSharedSecret(ctx context.Context, r *SharedSecret, req SharedSecretRequest) (Session, error) {
	if r == nil {
		return Session{}, mxerror.New(mxerror.Forbidden, "shared secret registration is not enabled")
	}
	if req.Username == "" || req.Password == "" || req.Nonce == "" || req.MAC == "" {
		return Session{}, mxerror.New(mxerror.MissingParam, "nonce, username, password and mac are required")
	}
	if err := r.Verify(req); err != nil {
		return Session{}, err
	}
	local := strings.ToLower(req.Username)
	if err := s.ValidateLocalpart(local); err != nil {
		return Session{}, err
	}
	if err := CheckNewPassword(req.Password); err != nil {
		return Session{}, err
	}
	return s.Register(ctx, NewAccount{Localpart: local, Password: req.Password, Admin: req.Admin, DisplayName: req.DisplayName},
		LoginOptions{}, false)
}
