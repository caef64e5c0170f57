package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// RegistrationToken is a token that lets its holder register while registration
// requires one. It has the shape of Synapse's admin API, which tools already speak.
type RegistrationToken struct {
	Token string `json:"token"`
	// UsesAllowed nil is unlimited.
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	// ExpiryTime in ms since the epoch; nil never expires.
	ExpiryTime *int64 `json:"expiry_time"`
}

// valid reports whether the token can still start a registration.
func (t RegistrationToken) valid() bool {
	if t.ExpiryTime != nil && *t.ExpiryTime < now() {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

const regTokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// ValidRegistrationTokenString reports whether s may be a registration token: 1 to 64
// characters of [A-Za-z0-9._~-], as the spec says.
func ValidRegistrationTokenString(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ok := false
		for j := 0; j < len(regTokenChars); j++ {
			if s[i] == regTokenChars[j] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// CreateRegistrationToken stores a new token; an empty Token gets a random one.
func (s *Service) CreateRegistrationToken(ctx context.Context, t RegistrationToken) (RegistrationToken, error) {
	if t.Token == "" {
		t.Token = randomToken(12)
	}
	if !ValidRegistrationTokenString(t.Token) {
		return t, mxerror.New(mxerror.InvalidParam, "token must be 1 to 64 characters of A-Z a-z 0-9 . _ ~ -")
	}
	if t.UsesAllowed != nil && *t.UsesAllowed < 0 {
		return t, mxerror.New(mxerror.InvalidParam, "uses_allowed must be a non-negative integer or null")
	}
	if t.ExpiryTime != nil && *t.ExpiryTime < now() {
		return t, mxerror.New(mxerror.InvalidParam, "expiry_time must not be in the past")
	}
	t.Pending, t.Completed = 0, 0
	res, err := s.db.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3)
		ON CONFLICT (token) DO NOTHING`, t.Token, t.UsesAllowed, t.ExpiryTime)
	if err != nil {
		return t, fmt.Errorf("create registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return t, mxerror.New(mxerror.InvalidParam, "token already exists")
	}
	return t, nil
}

// RegistrationTokens lists every token.
func (s *Service) RegistrationTokens(ctx context.Context) ([]RegistrationToken, error) {
	rows, err := s.db.Query(ctx, `SELECT token, uses_allowed, pending, completed, expiry_ts FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, fmt.Errorf("list registration tokens: %w", err)
	}
	defer rows.Close()
	out := []RegistrationToken{}
	for rows.Next() {
		var t RegistrationToken
		if err := rows.Scan(&t.Token, &t.UsesAllowed, &t.Pending, &t.Completed, &t.ExpiryTime); err != nil {
			return nil, fmt.Errorf("list registration tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// GetRegistrationToken returns one token or ErrNotFound.
func (s *Service) GetRegistrationToken(ctx context.Context, token string) (RegistrationToken, error) {
	return getRegistrationToken(ctx, s.db.QueryRow, token)
}

func getRegistrationToken(ctx context.Context, queryRow func(context.Context, string, ...any) *sql.Row, token string) (RegistrationToken, error) {
	t := RegistrationToken{Token: token}
	err := queryRow(ctx, `SELECT uses_allowed, pending, completed, expiry_ts FROM registration_tokens WHERE token = $1`, token).
		Scan(&t.UsesAllowed, &t.Pending, &t.Completed, &t.ExpiryTime)
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("read registration token: %w", err)
	}
	return t, nil
}

// UpdateRegistrationToken changes uses_allowed and expiry_time of a token.
func (s *Service) UpdateRegistrationToken(ctx context.Context, token string, usesAllowed, expiry *int64) (RegistrationToken, error) {
	if usesAllowed != nil && *usesAllowed < 0 {
		return RegistrationToken{}, mxerror.New(mxerror.InvalidParam, "uses_allowed must be a non-negative integer or null")
	}
	res, err := s.db.Exec(ctx, `UPDATE registration_tokens SET uses_allowed = $1, expiry_ts = $2 WHERE token = $3`, usesAllowed, expiry, token)
	if err != nil {
		return RegistrationToken{}, fmt.Errorf("update registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return RegistrationToken{}, ErrNotFound
	}
	return s.GetRegistrationToken(ctx, token)
}

// DeleteRegistrationToken removes a token, or returns ErrNotFound.
func (s *Service) DeleteRegistrationToken(ctx context.Context, token string) error {
	res, err := s.db.Exec(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("delete registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// RegistrationTokenValid answers /register/m.login.registration_token/validity.
func (s *Service) RegistrationTokenValid(ctx context.Context, token string) (bool, error) {
	t, err := s.GetRegistrationToken(ctx, token)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.valid(), nil
}

// reserveRegistrationToken counts a UIA session that validated the token as pending,
// so that a token with one use left cannot start two registrations.
func (s *Service) reserveRegistrationToken(ctx context.Context, token string) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		t, err := getRegistrationToken(ctx, tx.QueryRow, token)
		if errors.Is(err, ErrNotFound) || (err == nil && !t.valid()) {
			return mxerror.New(mxerror.Unauthorized, "invalid registration token")
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1`, token)
		return err
	})
}

// completeRegistrationToken moves one pending use of the token to completed, inside
// the transaction that creates the account.
func completeRegistrationToken(ctx context.Context, tx *storage.Tx, token string) error {
	_, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END,
		completed = completed + 1 WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("complete registration token: %w", err)
	}
	return nil
}
