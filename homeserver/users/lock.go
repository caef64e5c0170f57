package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// AccountRestriction is one of the two reversible restrictions an admin puts on
// an account (spec v1.13, admin endpoints v1.18).
type AccountRestriction string

const (
	// Locked: every request but logout answers 401 M_USER_LOCKED with
	// soft_logout, and the sessions stay, so the user carries on once unlocked.
	Locked AccountRestriction = "locked"
	// Suspended: the user reads, leaves, redacts their own events and manages
	// their devices and keys, but cannot join, invite, send or change their
	// profile (403 M_USER_SUSPENDED).
	Suspended AccountRestriction = "suspended"
)

// column is the accounts column holding the restriction; the value is one of the
// two constants, never caller input.
func (r AccountRestriction) column() string { return string(r) }

// Restricted reports whether a local user's account carries the restriction.
// Another server's user is never restricted here.
func (s *Service) Restricted(ctx context.Context, userID string, r AccountRestriction) (bool, error) {
	local, ok := s.LocalpartOf(userID)
	if !ok {
		return false, nil
	}
	var on bool
	err := s.db.QueryRow(ctx, `SELECT `+r.column()+` FROM accounts WHERE localpart = $1`, local).Scan(&on)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s status of %s: %w", r, userID, err)
	}
	return on, nil
}

// CheckNotSuspended is the core's one answer to "may this user act?": nil, or
// M_USER_SUSPENDED.
func (s *Service) CheckNotSuspended(ctx context.Context, userID string) error {
	on, err := s.Restricted(ctx, userID, Suspended)
	if err != nil {
		return err
	}
	if on {
		return mxerror.New(mxerror.UserSuspended, "you cannot perform this action while suspended")
	}
	return nil
}

// AdminRestriction reads (set == nil) or sets the restriction of a local user
// for an admin. The spec's rules: the target must be a local, existing, active
// account (M_INVALID_PARAM for another server's user, M_NOT_FOUND otherwise);
// an admin cannot restrict themselves or another admin (M_FORBIDDEN). Locking
// publishes a Revoked notice for all the user's devices so that open native
// sessions close at once; the tokens themselves stay valid.
func (s *Service) AdminRestriction(ctx context.Context, admin Caller, userID string, r AccountRestriction, set *bool) (bool, error) {
	if !admin.IsAdmin {
		return false, mxerror.New(mxerror.Forbidden, "you are not a server admin")
	}
	local, ok := s.LocalpartOf(userID)
	if !ok {
		return false, mxerror.New(mxerror.InvalidParam, "%s is not a user of this server", userID)
	}
	acct, err := s.Account(ctx, local)
	if errors.Is(err, ErrNotFound) || (err == nil && acct.Deactivated) {
		return false, mxerror.New(mxerror.NotFound, "no active user %s", userID)
	}
	if err != nil {
		return false, err
	}
	if set == nil {
		return s.Restricted(ctx, userID, r)
	}
	if local == admin.Localpart || acct.IsAdmin {
		return false, mxerror.New(mxerror.Forbidden, "admins cannot be %s", r)
	}
	if _, err := s.db.Exec(ctx, `UPDATE accounts SET `+r.column()+` = $1 WHERE localpart = $2`, *set, local); err != nil {
		return false, fmt.Errorf("set %s of %s: %w", r, userID, err)
	}
	if r == Locked && *set {
		s.revoked(local, nil, true)
	}
	return *set, nil
}
