// Package directory is the user directory: finding people by name or ID. As in
// Synapse's default, a user finds those who share a room with them and anyone in a
// public room.
package directory

import (
	"context"
	"fmt"
	"strings"

	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Service searches users.
type Service struct {
	db         *storage.DB
	serverName string
}

// New returns the directory over db.
func New(db *storage.DB, serverName string) *Service { return &Service{db: db, serverName: serverName} }

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
	like := "%" + strings.NewReplacer("%", "", "_", "").Replace(strings.ToLower(strings.TrimSpace(term))) + "%"
	suffix := ":" + s.serverName
	rows, err := s.db.Query(ctx, `SELECT p.localpart, p.displayname, p.avatar_url FROM profiles p JOIN accounts a ON a.localpart = p.localpart
		WHERE a.deactivated = FALSE AND (LOWER('@' || p.localpart || $2) LIKE $1 OR LOWER(COALESCE(p.displayname, '')) LIKE $1)
		AND ('@' || p.localpart || $2 IN (`+rooms.SharedRoomMembersSQL("$3")+`)
		OR '@' || p.localpart || $2 IN (`+rooms.PublicRoomMembersSQL+`))
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
	if len(res.Results) > limit {
		res.Results, res.Limited = res.Results[:limit], true
	}
	return res, rows.Err()
}
