package users

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// OpenIDLifetime is how long an OpenID token proves its user's identity.
const OpenIDLifetime = time.Hour

// NewOpenIDToken issues a token that proves userID's identity to a third party for
// OpenIDLifetime.
func (s *Service) NewOpenIDToken(ctx context.Context, userID string) (string, error) {
	b := make([]byte, 24)
	rand.Read(b)
	token := base64.RawURLEncoding.EncodeToString(b)
	now := time.Now()
	if _, err := s.db.Exec(ctx, `DELETE FROM openid_tokens WHERE expires_ts < $1`, now.UnixMilli()); err != nil {
		return "", fmt.Errorf("expire openid tokens: %w", err)
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO openid_tokens (token, user_id, expires_ts) VALUES ($1, $2, $3)`,
		token, userID, now.Add(OpenIDLifetime).UnixMilli()); err != nil {
		return "", fmt.Errorf("store openid token: %w", err)
	}
	return token, nil
}

// OpenIDUser returns the user an unexpired OpenID token was issued to, or ErrNotFound.
func (s *Service) OpenIDUser(ctx context.Context, token string) (string, error) {
	var userID string
	err := s.db.QueryRow(ctx, `SELECT user_id FROM openid_tokens WHERE token = $1 AND expires_ts >= $2`, token, time.Now().UnixMilli()).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read openid token: %w", err)
	}
	return userID, nil
}
