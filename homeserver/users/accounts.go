package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// NewAccount describes an account to create.
type NewAccount struct {
	// Localpart is the user's chosen name; empty picks a free numeric one.
	Localpart string
	// Password may be empty for accounts that never log in with one.
	Password string
	Guest    bool
	Admin    bool
	// DisplayName is the initial profile name; empty means the localpart.
	DisplayName string
	// RegistrationToken, when the registration used one, is counted as used in the
	// same transaction that creates the account.
	RegistrationToken string
}

// Session is what a successful login or registration hands the client.
type Session struct {
	UserID       string `json:"user_id"`
	AccessToken  string `json:"access_token,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	// ExpiresInMs is set when a refresh token was issued.
	ExpiresInMs int64  `json:"expires_in_ms,omitempty"`
	HomeServer  string `json:"home_server,omitempty"`
}

// LoginOptions says which device a new session belongs to.
type LoginOptions struct {
	// DeviceID reuses an existing device (replacing its tokens) or names a new one;
	// empty creates a device with a random ID.
	DeviceID string
	// DisplayName is the new device's name.
	DisplayName string
	// WithRefreshToken issues an expiring access token and a refresh token.
	WithRefreshToken bool
	// IP of the client, recorded as the device's last seen address.
	IP string
}

// Register creates an account and, unless inhibitLogin, logs it in.
func (s *Service) Register(ctx context.Context, acct NewAccount, login LoginOptions, inhibitLogin bool) (Session, error) {
	hash := ""
	if acct.Password != "" {
		var err error
		if hash, err = s.hashPassword(ctx, acct.Password); err != nil {
			return Session{}, fmt.Errorf("hash password: %w", err)
		}
	}
	return s.registerHashed(ctx, acct, hash, login, inhibitLogin)
}

// registerHashed is Register with the password already hashed (acct.Password is
// ignored).
func (s *Service) registerHashed(ctx context.Context, acct NewAccount, hash string, login LoginOptions, inhibitLogin bool) (Session, error) {
	var sess Session
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if acct.Localpart == "" {
			n, err := nextNumericLocalpart(ctx, tx)
			if err != nil {
				return err
			}
			acct.Localpart = strconv.FormatInt(n, 10)
		}
		res, err := tx.Exec(ctx, `INSERT INTO accounts (localpart, password_hash, is_guest, is_admin, created_ts)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (localpart) DO NOTHING`,
			acct.Localpart, hash, acct.Guest, acct.Admin, now())
		if err != nil {
			return fmt.Errorf("insert account: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mxerror.New(mxerror.UserInUse, "user ID already taken")
		}
		name := acct.DisplayName
		if name == "" {
			name = acct.Localpart
		}
		if _, err := tx.Exec(ctx, `INSERT INTO profiles (localpart, displayname) VALUES ($1, $2)`, acct.Localpart, name); err != nil {
			return fmt.Errorf("insert profile: %w", err)
		}
		if acct.RegistrationToken != "" {
			if err := completeRegistrationToken(ctx, tx, acct.RegistrationToken); err != nil {
				return err
			}
		}
		sess.UserID = s.UserID(acct.Localpart)
		if inhibitLogin {
			return nil
		}
		sess, err = s.createSession(ctx, tx, acct.Localpart, login)
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("register %q: %w", acct.Localpart, err)
	}
	sess.HomeServer = s.cfg.ServerName
	return sess, nil
}

// nextNumericLocalpart picks the next free all-digit localpart, for registrations that
// name no user and for guests.
func nextNumericLocalpart(ctx context.Context, tx *storage.Tx) (int64, error) {
	// Digit-only localparts are never chosen by validation-passing names that start
	// with a letter, but a user may pick digits, so take the largest in use plus one.
	var max sql.NullInt64
	q := `SELECT MAX(CAST(localpart AS BIGINT)) FROM accounts WHERE localpart ~ '^[0-9]{1,18}$'`
	if tx.Dialect() == storage.SQLite {
		q = `SELECT MAX(CAST(localpart AS INTEGER)) FROM accounts WHERE localpart NOT GLOB '*[^0-9]*' AND length(localpart) BETWEEN 1 AND 18`
	}
	if err := tx.QueryRow(ctx, q).Scan(&max); err != nil {
		return 0, fmt.Errorf("next numeric localpart: %w", err)
	}
	return max.Int64 + 1, nil
}

// Available reports whether localpart can be registered.
func (s *Service) Available(ctx context.Context, localpart string) error {
	if err := s.ValidateLocalpart(localpart); err != nil {
		return err
	}
	if s.cfg.Reserved != nil && s.cfg.Reserved(s.UserID(localpart)) {
		return mxerror.New(mxerror.Exclusive, "user ID is reserved by an application service")
	}
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM accounts WHERE localpart = $1`, localpart).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("check localpart %q: %w", localpart, err)
	}
	return mxerror.New(mxerror.UserInUse, "user ID already taken")
}

// Account is a stored account.
type Account struct {
	Localpart   string
	IsGuest     bool
	IsAdmin     bool
	Deactivated bool
}

// resolveLocalpart turns what a client typed at login, a full user ID or a bare
// localpart, into a local localpart. Login is case-insensitive as in Synapse:
// registration only allows lower case.
func (s *Service) resolveLocalpart(user string) (string, error) {
	if strings.HasPrefix(user, "@") {
		local, ok := s.LocalpartOf(strings.ToLower(user))
		if !ok {
			return "", mxerror.New(mxerror.Forbidden, "invalid username or password")
		}
		return local, nil
	}
	return strings.ToLower(user), nil
}

// LoginPassword checks the password of user (user ID or localpart) and opens a session.
func (s *Service) LoginPassword(ctx context.Context, user, password string, opts LoginOptions) (Session, error) {
	local, err := s.resolveLocalpart(user)
	if err != nil {
		return Session{}, err
	}
	if err := s.CheckPassword(ctx, local, password); err != nil {
		return Session{}, err
	}
	return s.Login(ctx, local, opts)
}

// CheckPassword returns nil if password is the account's password, M_FORBIDDEN if it
// is not or the account does not exist, and M_USER_DEACTIVATED for a deactivated one.
// Past the account's rate limit (Config.Limiter) it answers M_LIMIT_EXCEEDED without
// looking, right password or not: guesses spread over many addresses and
// front-ends still share one bucket per account.
func (s *Service) CheckPassword(ctx context.Context, localpart, password string) error {
	if ok, wait := s.cfg.Limiter.Allow(passwordKey(localpart)); !ok {
		return &mxerror.Error{Code: mxerror.LimitExceeded, Message: "too many password attempts for this account",
			RetryAfterMs: wait.Milliseconds() + 1}
	}
	var hash string
	var deactivated bool
	err := s.db.QueryRow(ctx, `SELECT password_hash, deactivated FROM accounts WHERE localpart = $1`, localpart).Scan(&hash, &deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		return mxerror.New(mxerror.Forbidden, "invalid username or password")
	}
	if err != nil {
		return fmt.Errorf("read account %q: %w", localpart, err)
	}
	if deactivated {
		return mxerror.New(mxerror.UserDeactivated, "this account has been deactivated")
	}
	ok, err := s.checkPassword(ctx, hash, password)
	if err != nil {
		return fmt.Errorf("check password of %q: %w", localpart, err)
	}
	if !ok {
		return mxerror.New(mxerror.Forbidden, "invalid username or password")
	}
	return nil
}

// passwordKey is an account's key in the rate limiter, apart from the user ID's own
// key (requests of the logged-in user), so that someone guessing a password does not
// use up the owner's request budget.
func passwordKey(localpart string) string { return "password:" + localpart }

// Login opens a session for an account whose identity was already proven.
func (s *Service) Login(ctx context.Context, localpart string, opts LoginOptions) (Session, error) {
	var sess Session
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var deactivated bool
		err := tx.QueryRow(ctx, `SELECT deactivated FROM accounts WHERE localpart = $1`, localpart).Scan(&deactivated)
		if errors.Is(err, sql.ErrNoRows) {
			return mxerror.New(mxerror.Forbidden, "invalid username or password")
		}
		if err != nil {
			return fmt.Errorf("read account: %w", err)
		}
		if deactivated {
			return mxerror.New(mxerror.UserDeactivated, "this account has been deactivated")
		}
		sess, err = s.createSession(ctx, tx, localpart, opts)
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("login %q: %w", localpart, err)
	}
	if opts.DeviceID != "" {
		// A login that names an existing device replaced its tokens (createSession).
		s.revoked(localpart, []string{opts.DeviceID}, false)
	}
	if err := s.devicesChanged(ctx, localpart, sess.DeviceID); err != nil {
		return Session{}, fmt.Errorf("login %q: %w", localpart, err)
	}
	sess.HomeServer = s.cfg.ServerName
	return sess, nil
}

// createSession creates or reuses the device and issues its tokens. Reusing a device
// ID logs the device's earlier tokens out, as the spec asks.
func (s *Service) createSession(ctx context.Context, tx *storage.Tx, localpart string, opts LoginOptions) (Session, error) {
	deviceID := opts.DeviceID
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	var name any
	if opts.DisplayName != "" {
		name = opts.DisplayName
	}
	ts := now()
	if _, err := tx.Exec(ctx, `INSERT INTO devices (localpart, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
		VALUES ($1, $2, $3, $4, $4, $5)
		ON CONFLICT (localpart, device_id) DO UPDATE SET last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
		localpart, deviceID, name, ts, opts.IP); err != nil {
		return Session{}, fmt.Errorf("upsert device %s: %w", deviceID, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2`, localpart, deviceID); err != nil {
		return Session{}, fmt.Errorf("replace tokens of device %s: %w", deviceID, err)
	}
	return s.issueTokens(ctx, tx, localpart, deviceID, opts.WithRefreshToken)
}

func (s *Service) issueTokens(ctx context.Context, tx *storage.Tx, localpart, deviceID string, withRefresh bool) (Session, error) {
	sess := Session{UserID: s.UserID(localpart), DeviceID: deviceID, AccessToken: "hya_" + randomToken(32)}
	var refreshHash any
	var expires int64
	if withRefresh {
		sess.RefreshToken = "hyr_" + randomToken(32)
		sess.ExpiresInMs = s.cfg.AccessTokenLifetime.Milliseconds()
		refreshHash = hashToken(sess.RefreshToken)
		expires = now() + sess.ExpiresInMs
	}
	if _, err := tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, refresh_hash, localpart, device_id, created_ts, expires_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`, hashToken(sess.AccessToken), refreshHash, localpart, deviceID, now(), expires); err != nil {
		return Session{}, fmt.Errorf("insert access token: %w", err)
	}
	return sess, nil
}

// Refresh exchanges a refresh token for a new access token and refresh token. The old
// pair stops working at once.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Session, error) {
	var sess Session
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var localpart, deviceID string
		err := tx.QueryRow(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1 RETURNING localpart, device_id`,
			hashToken(refreshToken)).Scan(&localpart, &deviceID)
		if errors.Is(err, sql.ErrNoRows) {
			return mxerror.New(mxerror.UnknownToken, "unknown refresh token")
		}
		if err != nil {
			return fmt.Errorf("consume refresh token: %w", err)
		}
		sess, err = s.issueTokens(ctx, tx, localpart, deviceID, true)
		return err
	})
	return sess, err
}

// Caller is the authenticated user and device behind an access token.
type Caller struct {
	UserID    string
	Localpart string
	DeviceID  string
	IsGuest   bool
	IsAdmin   bool
	// Locked is true when an admin locked the account: front-ends refuse every
	// request but logout with M_USER_LOCKED.
	Locked bool
	// AppService is the ID of the application service making the request, as
	// itself or as a user of its namespace; empty for everyone else.
	AppService string
	// Unlimited exempts the caller from rate limits (an application service
	// registered with rate_limited: false).
	Unlimited bool
	// tokenHash identifies the token for Logout.
	tokenHash string
}

// Authenticate resolves an access token. Unknown tokens give M_UNKNOWN_TOKEN; expired
// ones the same with soft_logout, so the client refreshes instead of logging out.
func (s *Service) Authenticate(ctx context.Context, token, ip string) (Caller, error) {
	c := Caller{tokenHash: hashToken(token)}
	var expires int64
	var deactivated bool
	err := s.db.QueryRow(ctx, `SELECT t.localpart, t.device_id, t.expires_ts, a.is_guest, a.is_admin, a.deactivated, a.locked
		FROM access_tokens t JOIN accounts a ON a.localpart = t.localpart WHERE t.token_hash = $1`, c.tokenHash).
		Scan(&c.Localpart, &c.DeviceID, &expires, &c.IsGuest, &c.IsAdmin, &deactivated, &c.Locked)
	if errors.Is(err, sql.ErrNoRows) || deactivated {
		return Caller{}, mxerror.New(mxerror.UnknownToken, "unknown access token")
	}
	if err != nil {
		return Caller{}, fmt.Errorf("look up access token: %w", err)
	}
	if expires != 0 && expires < now() {
		return Caller{}, &mxerror.Error{Code: mxerror.UnknownToken, Message: "access token expired", SoftLogout: true}
	}
	c.UserID = s.UserID(c.Localpart)
	s.touchDevice(ctx, c.Localpart, c.DeviceID, ip)
	return c, nil
}

// touchDevice records when and from where a device was last seen, at most once a
// minute per device so that busy clients do not turn every read into a write.
func (s *Service) touchDevice(ctx context.Context, localpart, deviceID, ip string) {
	key := localpart + "\x00" + deviceID
	t := now()
	s.seenMu.Lock()
	last := s.seen[key]
	recent := t-last.UnixMilli() < 60_000
	if !recent {
		s.seen[key] = timeFromMillis(t)
	}
	s.seenMu.Unlock()
	if recent {
		return
	}
	// Best effort: failing to record last-seen must not fail the request.
	_, _ = s.db.Exec(ctx, `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2 WHERE localpart = $3 AND device_id = $4`,
		t, ip, localpart, deviceID)
}

// Logout ends the caller's session: its token and its device.
func (s *Service) Logout(ctx context.Context, c Caller) error {
	return s.DeleteDevices(ctx, c.Localpart, []string{c.DeviceID})
}

// LogoutAll ends every session of the user.
func (s *Service) LogoutAll(ctx context.Context, localpart string) error {
	ids, err := s.deviceIDs(ctx, localpart, "")
	if err != nil {
		return err
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE localpart = $1`, localpart); err != nil {
			return fmt.Errorf("logout all of %q: %w", localpart, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM devices WHERE localpart = $1`, localpart); err != nil {
			return fmt.Errorf("logout all of %q: %w", localpart, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.devicesDeleted(ctx, localpart, ids, true)
}

// ChangePassword sets a new password. With logoutDevices, every other device of the
// user is logged out (keepDevice stays).
func (s *Service) ChangePassword(ctx context.Context, localpart, newPassword string, logoutDevices bool, keepDevice string) error {
	hash, err := s.hashPassword(ctx, newPassword)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	var gone []string
	if logoutDevices {
		if gone, err = s.deviceIDs(ctx, localpart, keepDevice); err != nil {
			return err
		}
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE accounts SET password_hash = $1 WHERE localpart = $2`, hash, localpart); err != nil {
			return fmt.Errorf("set password of %q: %w", localpart, err)
		}
		if !logoutDevices {
			return nil
		}
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE localpart = $1 AND device_id <> $2`, localpart, keepDevice); err != nil {
			return fmt.Errorf("log out devices of %q: %w", localpart, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM devices WHERE localpart = $1 AND device_id <> $2`, localpart, keepDevice); err != nil {
			return fmt.Errorf("log out devices of %q: %w", localpart, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.devicesDeleted(ctx, localpart, gone, false)
}

// Deactivate closes an account for good: it can no longer log in, every session ends,
// and its user ID is never registered again. With erase, the profile is cleared too.
func (s *Service) Deactivate(ctx context.Context, localpart string, erase bool) error {
	ids, err := s.deviceIDs(ctx, localpart, "")
	if err != nil {
		return err
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		stmts := []string{
			`UPDATE accounts SET deactivated = TRUE, password_hash = '' WHERE localpart = $1`,
			`DELETE FROM access_tokens WHERE localpart = $1`,
			`DELETE FROM devices WHERE localpart = $1`,
			`DELETE FROM login_tokens WHERE localpart = $1`,
		}
		if erase {
			stmts = append(stmts, `UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE localpart = $1`,
				`UPDATE accounts SET erased = TRUE WHERE localpart = $1`)
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q, localpart); err != nil {
				return fmt.Errorf("deactivate %q: %w", localpart, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.devicesDeleted(ctx, localpart, ids, true)
}

// IsGuest reports whether userID is a local guest account; remote and unknown
// users are not guests.
func (s *Service) IsGuest(ctx context.Context, userID string) (bool, error) {
	local, ok := s.LocalpartOf(userID)
	if !ok {
		return false, nil
	}
	a, err := s.Account(ctx, local)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return a.IsGuest, err
}

// ErasedUsers reports which of userIDs are local accounts deactivated with erasure.
func (s *Service) ErasedUsers(ctx context.Context, userIDs []string) (map[string]bool, error) {
	var locals []string
	for _, u := range userIDs {
		if l, ok := s.LocalpartOf(u); ok {
			locals = append(locals, l)
		}
	}
	out := map[string]bool{}
	if len(locals) == 0 {
		return out, nil
	}
	marks, args := storage.InList(locals)
	rows, err := s.db.Query(ctx, `SELECT localpart FROM accounts WHERE erased AND localpart IN (`+marks+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("read erased users: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return nil, fmt.Errorf("read erased users: %w", err)
		}
		out[s.UserID(l)] = true
	}
	return out, rows.Err()
}

// Account returns the stored account.
func (s *Service) Account(ctx context.Context, localpart string) (Account, error) {
	a := Account{Localpart: localpart}
	err := s.db.QueryRow(ctx, `SELECT is_guest, is_admin, deactivated FROM accounts WHERE localpart = $1`, localpart).
		Scan(&a.IsGuest, &a.IsAdmin, &a.Deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		return a, ErrNotFound
	}
	if err != nil {
		return a, fmt.Errorf("read account %q: %w", localpart, err)
	}
	return a, nil
}

// CreateLoginToken issues a single-use m.login.token for the user.
func (s *Service) CreateLoginToken(ctx context.Context, localpart string) (token string, expiresInMs int64, err error) {
	token = "hyl_" + randomToken(24)
	expiresInMs = s.cfg.LoginTokenLifetime.Milliseconds()
	_, err = s.db.Exec(ctx, `INSERT INTO login_tokens (token_hash, localpart, expires_ts) VALUES ($1, $2, $3)`,
		hashToken(token), localpart, now()+expiresInMs)
	if err != nil {
		return "", 0, fmt.Errorf("create login token for %q: %w", localpart, err)
	}
	return token, expiresInMs, nil
}

// LoginWithToken consumes an m.login.token and opens a session.
func (s *Service) LoginWithToken(ctx context.Context, token string, opts LoginOptions) (Session, error) {
	var localpart string
	var expires int64
	err := s.db.WriteQueryRow(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING localpart, expires_ts`,
		hashToken(token)).Scan(&localpart, &expires)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && expires < now()) {
		return Session{}, mxerror.New(mxerror.Forbidden, "invalid or expired login token")
	}
	if err != nil {
		return Session{}, fmt.Errorf("consume login token: %w", err)
	}
	return s.Login(ctx, localpart, opts)
}
