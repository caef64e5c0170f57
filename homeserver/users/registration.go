package users

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
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

// RegisterRequest is one step of an interactive registration (/register), as the
// client sent it: pointers and zero values are what it left out.
type RegisterRequest struct {
	Username                 *string
	Password                 *string
	DeviceID                 string
	InitialDeviceDisplayName string
	InhibitLogin             bool
	RefreshToken             bool
	// GuestAccessToken upgrades the guest account it belongs to into a full
	// account (keeping its user ID, rooms and data) instead of creating one.
	// Username, when given, must be that guest's localpart.
	GuestAccessToken string
	// IP is the client's address, recorded on the new device.
	IP string
}

// given reports whether the request carries any parameter besides auth.
func (r RegisterRequest) given() bool {
	return r.Username != nil || r.Password != nil || r.DeviceID != "" || r.InitialDeviceDisplayName != "" ||
		r.InhibitLogin || r.RefreshToken || r.GuestAccessToken != ""
}

// registerParams are what a registration's auth session remembers between steps.
// The password is kept only as its hash, and a guest's token only as the guest it
// proved, so the session table holds no secret a client could log in with.
type registerParams struct {
	Username     string `json:"username,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	DisplayName  string `json:"initial_device_display_name,omitempty"`
	InhibitLogin bool   `json:"inhibit_login,omitempty"`
	RefreshToken bool   `json:"refresh_token,omitempty"`
	Guest        string `json:"guest,omitempty"`
}

// RegisterInteractive runs one step of registration with user-interactive auth, as
// Synapse does: the session remembers the parameters of the step that carried them,
// so a later step may send only the auth dict; and a session whose registration is
// done answers every repeat with the same account (logged in again), so a client
// that lost the first answer can retry safely. The username is checked before the
// auth stages, so a client learns at once that its choice will not do.
//
// Until it expires (an hour), a finished session ID logs its account in again, as
// in Synapse: it is as secret as the password the client sent with it.
func (s *Service) RegisterInteractive(ctx context.Context, req RegisterRequest, auth json.RawMessage) (Session, error) {
	if !s.cfg.RegistrationOpen {
		return Session{}, mxerror.New(mxerror.Forbidden, "registration is disabled")
	}
	var stored registerParams
	var result string
	if id := gjson.GetBytes(auth, "session").String(); id != "" {
		raw, res, ok, err := s.uiaSession(ctx, id, "register")
		if err != nil {
			return Session{}, err
		}
		if ok && raw != "" {
			if err := json.Unmarshal([]byte(raw), &stored); err != nil {
				return Session{}, fmt.Errorf("read registration session: %w", err)
			}
		}
		result = res
	}
	p := stored
	if req.given() {
		var err error
		if p, err = s.registerParamsOf(ctx, req, stored, result != ""); err != nil {
			return Session{}, err
		}
	}
	if result == "" && p.PasswordHash == "" && p.Guest == "" {
		if len(auth) == 0 || string(auth) == "null" {
			// A first request without credentials asks for the flows: answer with
			// the auth stages (401) before insisting on a password.
			_, err := s.Interactive(ctx, Interactive{Purpose: "register", Flows: s.RegistrationFlows(), Keep: true}, nil)
			return Session{}, err
		}
		return Session{}, mxerror.New(mxerror.MissingParam, "password is required")
	}
	enc, err := json.Marshal(p)
	if err != nil {
		return Session{}, err
	}
	done, err := s.Interactive(ctx, Interactive{Purpose: "register", Flows: s.RegistrationFlows(), Params: enc, Keep: true}, auth)
	if err != nil {
		return Session{}, err
	}
	login := LoginOptions{DeviceID: p.DeviceID, DisplayName: p.DisplayName, WithRefreshToken: p.RefreshToken, IP: req.IP}
	var sess Session
	switch {
	case done.Result != "" && p.Username != "" && p.Username != done.Result:
		// A repeat that names someone else is another registration, not a retry.
		return Session{}, mxerror.New(mxerror.InvalidParam, "this auth session already registered %s", s.UserID(done.Result))
	case done.Result != "":
		sess, err = s.loginAgain(ctx, done.Result, login, p.InhibitLogin)
	case p.Guest != "":
		sess, err = s.upgradeGuest(ctx, p.Guest, p.PasswordHash, login, p.InhibitLogin)
	default:
		sess, err = s.registerHashed(ctx, NewAccount{Localpart: p.Username, RegistrationToken: done.RegistrationToken}, p.PasswordHash, login, p.InhibitLogin)
	}
	if err != nil {
		return Session{}, err
	}
	if done.Result == "" {
		local, _ := s.LocalpartOf(sess.UserID)
		if err := s.setUIAResult(ctx, done.Session, local); err != nil {
			return Session{}, err
		}
	}
	return sess, nil
}

// registerParamsOf checks a registration step's parameters and turns them into what
// its session keeps. A password left out keeps the one the session holds.
// registered says the session has made its account already: the name is then
// not checked again (it is taken, by this very registration).
func (s *Service) registerParamsOf(ctx context.Context, req RegisterRequest, stored registerParams, registered bool) (registerParams, error) {
	p := registerParams{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		InhibitLogin: req.InhibitLogin, RefreshToken: req.RefreshToken, PasswordHash: stored.PasswordHash}
	if req.Username != nil {
		p.Username = strings.ToLower(*req.Username)
	}
	if req.GuestAccessToken != "" {
		c, err := s.Authenticate(ctx, req.GuestAccessToken, req.IP)
		if err != nil || !c.IsGuest {
			return p, mxerror.New(mxerror.Forbidden, "guest_access_token does not belong to a guest account")
		}
		if p.Username == "" {
			p.Username = c.Localpart
		}
		if p.Username != c.Localpart {
			return p, mxerror.New(mxerror.Forbidden, "a guest can only upgrade its own account")
		}
		p.Guest = c.Localpart
	} else if p.Username != "" && !registered {
		if err := s.Available(ctx, p.Username); err != nil {
			return p, err
		}
	}
	if req.Password != nil {
		if err := CheckNewPassword(*req.Password); err != nil {
			return p, err
		}
		hash, err := s.hashPassword(ctx, *req.Password)
		if err != nil {
			return p, fmt.Errorf("hash password: %w", err)
		}
		p.PasswordHash = hash
	}
	return p, nil
}

// loginAgain answers a repeated, finished registration: a new session for the
// account it made.
func (s *Service) loginAgain(ctx context.Context, localpart string, login LoginOptions, inhibitLogin bool) (Session, error) {
	sess := Session{UserID: s.UserID(localpart)}
	if !inhibitLogin {
		err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			sess, err = s.createSession(ctx, tx, localpart, login)
			return err
		})
		if err != nil {
			return Session{}, fmt.Errorf("log %q in again: %w", localpart, err)
		}
	}
	sess.HomeServer = s.cfg.ServerName
	return sess, nil
}

// upgradeGuest turns a guest account into a full one with a password, keeping its
// user ID and everything it holds, and logs it in on a new device.
func (s *Service) upgradeGuest(ctx context.Context, localpart, hash string, login LoginOptions, inhibitLogin bool) (Session, error) {
	if hash == "" {
		return Session{}, mxerror.New(mxerror.MissingParam, "password is required")
	}
	sess := Session{UserID: s.UserID(localpart)}
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE accounts SET is_guest = false, password_hash = $1 WHERE localpart = $2 AND is_guest AND NOT deactivated`, hash, localpart)
		if err != nil {
			return fmt.Errorf("upgrade guest: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mxerror.New(mxerror.Forbidden, "%s is not a guest account", sess.UserID)
		}
		if inhibitLogin {
			return nil
		}
		sess, err = s.createSession(ctx, tx, localpart, login)
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("upgrade guest %q: %w", localpart, err)
	}
	sess.HomeServer = s.cfg.ServerName
	return sess, nil
}
