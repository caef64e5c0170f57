package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
)

// MembershipGate is a rule another core domain adds to membership changes made
// here (an invite or a join by a local user, from any front-end): it returns an
// error (a *mxerror.Error for the client) to refuse the change. homeserver/social
// uses it to cap a group's size, so that the cap holds for a Matrix client's
// /invite and /join as much as for the IM API. It runs before the event is built.
type MembershipGate func(ctx context.Context, roomID string, m Membership) error

// IgnoredUsers returns the set of users userID ignores (m.ignored_user_list):
// their non-state events are hidden from userID in every read, as the spec's
// "Ignoring users" asks and Synapse's filter_events_for_client does.
type IgnoredUsers func(ctx context.Context, userID string) (map[string]bool, error)

// CreateContent is the content of the room's m.room.create event, read without a
// reader's visibility check: it is room metadata for the core's own rules (a
// group's marker), like PowerFor. ErrNotFound when this server holds no create
// event for the room (unknown room, or only an invite from another server).
func (s *Service) CreateContent(ctx context.Context, roomID string) (json.RawMessage, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.create' AND c.state_key = ''`, roomID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("create event of %s: %w", roomID, err)
	}
	return json.RawMessage(gjson.Get(raw, "content").Raw), nil
}

// MemberCounts counts the room's joined and invited members now.
func (s *Service) MemberCounts(ctx context.Context, roomID string) (joined, invited int, err error) {
	err = s.db.QueryRow(ctx, `SELECT
		COALESCE(SUM(CASE WHEN membership = 'join' THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN membership = 'invite' THEN 1 ELSE 0 END), 0)
		FROM current_state WHERE room_id = $1 AND type = 'm.room.member'`, roomID).Scan(&joined, &invited)
	if err != nil {
		return 0, 0, fmt.Errorf("member counts of %s: %w", roomID, err)
	}
	return joined, invited, nil
}

// IgnoredBy is the set of users userID ignores (nil when none, or when no
// Config.Ignored is set): sync uses it to hide ignored users' invites.
func (s *Service) IgnoredBy(ctx context.Context, userID string) (map[string]bool, error) {
	if s.cfg.Ignored == nil {
		return nil, nil
	}
	return s.cfg.Ignored(ctx, userID)
}
