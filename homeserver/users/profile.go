package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Profile is a user's global displayname and avatar.
type Profile struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// Profile returns a local user's profile, or ErrNotFound.
func (s *Service) Profile(ctx context.Context, localpart string) (Profile, error) {
	var p Profile
	err := s.db.QueryRow(ctx, `SELECT displayname, avatar_url FROM profiles WHERE localpart = $1`, localpart).Scan(&p.DisplayName, &p.AvatarURL)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("read profile of %q: %w", localpart, err)
	}
	return p, nil
}

// ProfileOf returns any user's profile: a local user's from the profiles table,
// another server's by asking that server over federation. Every front-end's profile
// lookup calls it, so local and remote users are found the same way everywhere. A
// malformed user ID is M_INVALID_PARAM; a user with no profile, or one whose server
// does not answer, is M_NOT_FOUND.
func (s *Service) ProfileOf(ctx context.Context, userID string) (Profile, error) {
	var p Profile
	var err error
	if local, ok := s.LocalpartOf(userID); ok {
		p, err = s.Profile(ctx, local)
	} else if _, uerr := spec.NewUserID(userID, false); uerr != nil {
		return Profile{}, mxerror.New(mxerror.InvalidParam, "%q is not a user ID", userID)
	} else {
		p, err = s.RemoteProfile(ctx, userID)
	}
	if errors.Is(err, ErrNotFound) {
		return Profile{}, mxerror.New(mxerror.NotFound, "profile not found")
	}
	return p, err
}

// SetDisplayName sets (or with nil, clears) the displayname.
func (s *Service) SetDisplayName(ctx context.Context, localpart string, name *string) error {
	return s.setProfileField(ctx, localpart, "displayname", name)
}

// SetAvatarURL sets (or with nil, clears) the avatar URL.
func (s *Service) SetAvatarURL(ctx context.Context, localpart string, url *string) error {
	return s.setProfileField(ctx, localpart, "avatar_url", url)
}

func (s *Service) setProfileField(ctx context.Context, localpart, column string, value *string) error {
	if err := s.CheckNotSuspended(ctx, s.UserID(localpart)); err != nil {
		return err
	}
	// column is one of two constants above, never client input.
	_, err := s.db.Exec(ctx, `INSERT INTO profiles (localpart, `+column+`) VALUES ($1, $2)
		ON CONFLICT (localpart) DO UPDATE SET `+column+` = excluded.`+column, localpart, value)
	if err != nil {
		return fmt.Errorf("set %s of %q: %w", column, localpart, err)
	}
	if s.cfg.ProfileChanged != nil {
		if err := s.cfg.ProfileChanged(ctx, s.UserID(localpart)); err != nil {
			return fmt.Errorf("propagate %s of %q: %w", column, localpart, err)
		}
	}
	return nil
}

// MemberProfile returns a local user's displayname and avatar for their member
// events; empty strings when unset or unknown.
func (s *Service) MemberProfile(ctx context.Context, userID string) (displayName, avatarURL string) {
	local, ok := s.LocalpartOf(userID)
	if !ok {
		return "", ""
	}
	p, err := s.Profile(ctx, local)
	if err != nil {
		return "", ""
	}
	if p.DisplayName != nil {
		displayName = *p.DisplayName
	}
	if p.AvatarURL != nil {
		avatarURL = *p.AvatarURL
	}
	return displayName, avatarURL
}
