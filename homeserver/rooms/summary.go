package rooms

import (
	"context"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Preview is a room's summary for someone deciding whether to join it
// (/room_summary, spec v1.15): the public room fields plus what a client shows
// before joining.
type Preview struct {
	PublicRoom
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	// Membership is the caller's membership; empty for an anonymous caller or one
	// who never had one.
	Membership string `json:"membership,omitempty"`
}

// PreviewRoom summarises a room, named by ID or alias, for userID ("" when the
// caller is anonymous). A room held here is summarised from its current state
// when the caller may see it: a member or invitee, or anyone when the join rule or
// history visibility makes the room discoverable. A room held only elsewhere is
// asked of the via servers over federation (their /hierarchy), the way a space
// hierarchy learns about it. Anything the caller may not see is M_NOT_FOUND, so
// the answer tells an outsider nothing about a private room's existence.
func (s *Service) PreviewRoom(ctx context.Context, roomIDOrAlias, userID string, via []string) (Preview, error) {
	roomID := roomIDOrAlias
	if strings.HasPrefix(roomIDOrAlias, "#") {
		id, servers, err := s.LookupAlias(ctx, roomIDOrAlias)
		if err != nil {
			if mxerror.Is(err, mxerror.InvalidParam) {
				return Preview{}, err
			}
			return Preview{}, mxerror.New(mxerror.NotFound, "room not found")
		}
		roomID, via = id, append(via, servers...)
	} else if err := CheckRoomID(roomIDOrAlias); err != nil {
		return Preview{}, err
	}
	notFound := mxerror.New(mxerror.NotFound, "room not found")
	membership := ""
	if userID != "" {
		m, err := s.CurrentMembership(ctx, roomID, userID)
		if err != nil {
			return Preview{}, err
		}
		membership = m
	}
	held, err := s.roomExists(ctx, roomID)
	if err != nil {
		return Preview{}, err
	}
	if !held || s.partialOnly(ctx, roomID) {
		// Known here at most by an invite or a knock: the room's servers know more.
		if s.remote == nil || len(via) == 0 {
			return Preview{}, notFound
		}
		room, _, err := s.remote.Hierarchy(ctx, roomID, via, false)
		if err != nil || room.RoomID != roomID {
			return Preview{}, notFound
		}
		// The remote server decided this room is visible to servers asking for it;
		// whether an anonymous caller may see it is still this server's rule.
		if userID == "" && !discoverable(room.PublicRoom) {
			return Preview{}, notFound
		}
		return Preview{PublicRoom: room.PublicRoom, Membership: membership}, nil
	}
	pr, err := s.publicRoom(ctx, roomID)
	if err != nil {
		return Preview{}, err
	}
	if membership != "join" && membership != "invite" && membership != "knock" && !discoverable(pr) {
		return Preview{}, notFound
	}
	sum := Preview{PublicRoom: pr, Membership: membership}
	rows, err := s.db.Query(ctx, `SELECT c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.state_key = '' AND c.type IN ('m.room.create', 'm.room.encryption', 'm.room.join_rules')`, roomID)
	if err != nil {
		return Preview{}, fmt.Errorf("summary of %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ, raw string
		if err := rows.Scan(&typ, &raw); err != nil {
			return Preview{}, fmt.Errorf("summary of %s: %w", roomID, err)
		}
		c := gjson.Get(raw, "content")
		switch typ {
		case "m.room.create":
			sum.RoomVersion = c.Get("room_version").String()
			if sum.RoomVersion == "" {
				sum.RoomVersion = "1" // the spec's default for a create event without one
			}
		case "m.room.encryption":
			sum.Encryption = c.Get("algorithm").String()
		case "m.room.join_rules":
			for _, a := range c.Get("allow").Array() {
				if a.Get("type").String() == "m.room_membership" && a.Get("room_id").String() != "" {
					sum.AllowedRoomIDs = append(sum.AllowedRoomIDs, a.Get("room_id").String())
				}
			}
		}
	}
	return sum, rows.Err()
}

// discoverable reports whether anyone may see a room's summary: the spec allows it
// for rooms with a public or knock join rule, or world-readable history.
// Restricted rooms are left to their members, invitees and knockers: whether a
// stranger is in one of the allowed rooms is not this summary's business.
func discoverable(pr PublicRoom) bool {
	switch pr.JoinRule {
	case "public", "knock", "knock_restricted":
		return true
	}
	return pr.WorldReadable
}

// MutualRooms lists the rooms both users are joined to, in room ID order, up to
// limit after the room ID from (exclusive; "" from the start), and how many there
// are in all.
func (s *Service) MutualRooms(ctx context.Context, userID, otherID, from string, limit int) ([]string, int, error) {
	const shared = `FROM current_state me JOIN current_state o ON o.room_id = me.room_id
		WHERE me.type = 'm.room.member' AND me.state_key = $1 AND me.membership = 'join'
		AND o.type = 'm.room.member' AND o.state_key = $2 AND o.membership = 'join'`
	var total int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) `+shared, userID, otherID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("mutual rooms of %s and %s: %w", userID, otherID, err)
	}
	rows, err := s.db.Query(ctx, `SELECT me.room_id `+shared+` AND me.room_id > $3 ORDER BY me.room_id LIMIT $4`, userID, otherID, from, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("mutual rooms of %s and %s: %w", userID, otherID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, 0, err
		}
		out = append(out, id)
	}
	return out, total, rows.Err()
}
