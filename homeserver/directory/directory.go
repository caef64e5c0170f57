// Package directory is the user directory: finding people by name or ID. As in
// Synapse's default, a user finds those who share a room with them and anyone in a
// public room; with SearchAllUsers, every local user. A search for a whole user ID
// finds that user wherever they are (a remote user through a profile query), as
// knowing the ID already is what an IM user does to add a contact.
//
// Third-party IDs (email, phone) are not searched: Hongyan stores no 3PIDs
// (GET /account/3pid answers an empty list), so there is nothing to make
// discoverable yet.
package directory

import (
	"context"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Config configures the directory.
type Config struct {
	ServerName string
	// SearchAllUsers finds every local user, not only those sharing a room with
	// the searcher or in a public room.
	SearchAllUsers bool
	// Users answers exact lookups by user ID (local accounts, remote profiles);
	// nil turns exact lookup of remote users off.
	Users *users.Service
}

// Service searches users.
type Service struct {
	db  *storage.DB
	cfg Config
}

// New returns the directory over db.
func New(db *storage.DB, cfg Config) *Service { return &Service{db: db, cfg: cfg} }

// User is one search result.
type User struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// Results is the /user_directory/search answer.
type Results struct {
	Results []User `json:"results"`
	Limited bool   `json:"limited"`
}

// Search finds users matching term (case-insensitively in user ID or displayname)
// whom the searcher may see.
func (s *Service) Search(ctx context.Context, searcher, term string, limit int) (Results, error) {
	term = strings.TrimSpace(term)
	like := "%" + strings.NewReplacer("%", "", "_", "").Replace(strings.ToLower(term)) + "%"
	suffix := ":" + s.cfg.ServerName
	visible := `AND ('@' || p.localpart || $2 IN (` + rooms.SharedRoomMembersSQL("$3") + `)
		OR '@' || p.localpart || $2 IN (` + rooms.PublicRoomMembersSQL + `))`
	if s.cfg.SearchAllUsers {
		visible = `AND $3 <> ''`
	}
	rows, err := s.db.Query(ctx, `SELECT p.localpart, p.displayname, p.avatar_url FROM profiles p JOIN accounts a ON a.localpart = p.localpart
		WHERE a.deactivated = FALSE AND (LOWER('@' || p.localpart || $2) LIKE $1 OR LOWER(COALESCE(p.displayname, '')) LIKE $1)
		`+visible+`
		ORDER BY p.localpart LIMIT $4`, like, suffix, searcher, limit+1)
	if err != nil {
		return Results{}, fmt.Errorf("search users: %w", err)
	}
	defer rows.Close()
	res := Results{Results: []User{}}
	for rows.Next() {
		var local string
		var u User
		if err := rows.Scan(&local, &u.DisplayName, &u.AvatarURL); err != nil {
			return Results{}, err
		}
		u.UserID = "@" + local + suffix
		res.Results = append(res.Results, u)
	}
	if err := rows.Err(); err != nil {
		return Results{}, err
	}
	if len(res.Results) > limit {
		res.Results, res.Limited = res.Results[:limit], true
	}
	if exact, ok := s.exact(ctx, term); ok {
		found := false
		for _, u := range res.Results {
			found = found || u.UserID == exact.UserID
		}
		if !found {
			res.Results = append([]User{exact}, res.Results...)
			if len(res.Results) > limit {
				res.Results, res.Limited = res.Results[:limit], true
			}
		}
	}
	return res, nil
}

// exact finds the user a whole user ID names: a local account that is not
// deactivated, or a remote user whose server answers a profile query.
func (s *Service) exact(ctx context.Context, term string) (User, bool) {
	if !strings.HasPrefix(term, "@") {
		return User{}, false
	}
	if _, err := spec.NewUserID(term, true); err != nil || s.cfg.Users == nil {
		return User{}, false
	}
	if local, ok := s.cfg.Users.LocalpartOf(term); ok {
		if a, err := s.cfg.Users.Account(ctx, local); err != nil || a.Deactivated {
			return User{}, false
		}
	}
	p, err := s.cfg.Users.ProfileOf(ctx, term)
	if err != nil {
		return User{}, false
	}
	return User{UserID: term, DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}, true
}
