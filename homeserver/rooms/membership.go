package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/calls"
	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Membership changes a user's membership in a room: join, knock, invite, leave, ban,
// or the two actions that are a "leave" by another user, kick and unban. sender acts
// on target.
type Membership struct {
	Sender, Target string
	// Membership is join, knock, invite, leave, ban, kick or unban.
	Membership string
	Reason     string
	IsDirect   bool
	Txn        *Txn
	// Servers are the servers to join a remote room through (the client's via or
	// server_name), tried after the one in the room ID.
	Servers []string
	// Content holds extra keys for the event's content, as Synapse takes them from
	// a /join body. They may set a per-room displayname or avatar_url; they cannot
	// change the membership or the keys the server sets for a restricted join.
	Content map[string]json.RawMessage
}

// serverMemberKeys are the content keys of a membership event that only the server
// sets.
var serverMemberKeys = []string{"membership", "join_authorised_via_users_server", "third_party_invite"}

// SetMembership sends the membership event.
func (s *Service) SetMembership(ctx context.Context, roomID string, m Membership) (Sent, error) {
	if _, err := spec.NewUserID(m.Target, true); err != nil {
		return Sent{}, mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", m.Target)
	}
	switch m.Membership {
	case "join", "knock", "invite":
		if err := s.checkActive(ctx, m.Sender); err != nil {
			return Sent{}, err
		}
	}
	// Kick and unban are leaves sent by someone else, and only make sense for a
	// member, or for a banned user.
	switch m.Membership {
	case "kick", "unban":
		cur, err := s.CurrentMembership(ctx, roomID, m.Target)
		if err != nil {
			return Sent{}, err
		}
		if m.Membership == "unban" && cur != "ban" {
			return Sent{}, mxerror.New(mxerror.Forbidden, "%s is not banned", m.Target)
		}
		if m.Membership == "kick" && cur != "join" && cur != "invite" && cur != "knock" {
			return Sent{}, mxerror.New(mxerror.Forbidden, "%s is not in the room", m.Target)
		}
		m.Membership = "leave"
	}
	if s.cfg.UserMissing != nil && m.Membership == "invite" && strings.HasSuffix(m.Target, ":"+s.cfg.ServerName) {
		s.cfg.UserMissing(ctx, m.Target)
	}
	if s.cfg.Gate != nil && (m.Membership == "invite" || m.Membership == "join") {
		if err := s.cfg.Gate(ctx, roomID, m); err != nil {
			return Sent{}, err
		}
	}
	content := s.memberContent(ctx, m.Target, m.Membership, m.IsDirect)
	for k, v := range m.Content {
		if !slices.Contains(serverMemberKeys, k) {
			content[k] = v
		}
	}
	if m.Membership == "join" && m.Sender == m.Target {
		remote, err := s.joinsRemotely(ctx, roomID)
		if err != nil {
			return Sent{}, err
		}
		if remote {
			sent, err := s.joinRemote(ctx, roomID, m, content)
			if err != nil {
				return Sent{}, err
			}
			// A room held elsewhere shows its guest access only once joined: a
			// guest who may not be there leaves at once and is refused.
			if err := s.checkGuestJoin(ctx, roomID, m.Target); err != nil {
				if _, lerr := s.SetMembership(ctx, roomID, Membership{Sender: m.Target, Target: m.Target, Membership: "leave"}); lerr != nil {
					slog.Warn("guest leaves a room it may not join", "room_id", roomID, "user_id", m.Target, "err", lerr)
				}
				return Sent{}, err
			}
			if err := s.followUpgrade(ctx, roomID); err != nil {
				slog.Warn("follow a room upgrade", "room_id", roomID, "err", err)
			}
			return sent, nil
		}
	}
	if m.Membership == "knock" && m.Sender == m.Target {
		if remote, err := s.joinsRemotely(ctx, roomID); err != nil {
			return Sent{}, err
		} else if remote {
			return s.knockRemote(ctx, roomID, m)
		}
	}
	if m.Membership == "leave" && m.Sender == m.Target && s.remote != nil {
		if remote, err := s.joinsRemotely(ctx, roomID); err != nil {
			return Sent{}, err
		} else if remote {
			return s.leaveRemote(ctx, roomID, m)
		}
	}
	if m.Membership == "invite" && s.remote != nil && !strings.HasSuffix(m.Target, ":"+s.cfg.ServerName) {
		if m.Reason != "" {
			content["reason"] = m.Reason
		}
		return s.inviteRemote(ctx, roomID, m, content)
	}
	if !s.isLocalRoom(roomID) {
		if ok, err := s.roomExists(ctx, roomID); err != nil || !ok {
			return Sent{}, mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
		}
	}
	if m.Membership == "leave" || m.Membership == "ban" {
		content = map[string]any{"membership": m.Membership}
	}
	if m.Reason != "" {
		content["reason"] = m.Reason
	}
	if m.Membership == "join" && m.Sender == m.Target {
		if err := s.checkGuestJoin(ctx, roomID, m.Target); err != nil {
			return Sent{}, err
		}
		via, err := s.restrictedJoinAuthoriser(ctx, roomID, m.Target)
		if err != nil {
			return Sent{}, err
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	target := m.Target
	sent, err := s.write(ctx, roomID, nil, []Proto{{Sender: m.Sender, Type: spec.MRoomMember, StateKey: &target, Content: mustJSON(content), Txn: m.Txn}})
	if err != nil {
		return Sent{}, s.roomError(err, roomID)
	}
	if m.Membership == "join" {
		// Rejoining un-forgets the room.
		if _, err := s.db.Exec(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, m.Target, roomID); err != nil {
			return Sent{}, fmt.Errorf("unforget room: %w", err)
		}
	}
	return sent[0], nil
}

// joinsRemotely reports whether joining the room takes another server: this server
// does not know it, or knows it but has no member left in it and did not create it.
func (s *Service) joinsRemotely(ctx context.Context, roomID string) (bool, error) {
	if s.remote == nil {
		return false, nil
	}
	var creator string
	err := s.db.QueryRow(ctx, `SELECT creator FROM rooms WHERE room_id = $1`, roomID).Scan(&creator)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read room: %w", err)
	}
	if strings.HasSuffix(creator, ":"+s.cfg.ServerName) {
		return false, nil
	}
	in, err := s.ServerInRoom(ctx, roomID, s.cfg.ServerName)
	return !in, err
}

// viaServers are the other servers among names — server names, or the user and
// room IDs that carry one — in order, once each.
func (s *Service) viaServers(names ...string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "!") || strings.HasPrefix(n, "@") || strings.HasPrefix(n, "#") {
			var ok bool
			if _, n, ok = strings.Cut(n, ":"); !ok {
				continue // a v12 room ID names no server
			}
		}
		if n != "" && n != s.cfg.ServerName && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// joinRemote joins through the servers the client names (they are the ones it
// knows to be in the room), then the one the room ID names.
func (s *Service) joinRemote(ctx context.Context, roomID string, m Membership, content map[string]any) (Sent, error) {
	servers := s.viaServers(append(slices.Clone(m.Servers), roomID)...)
	if len(servers) == 0 {
		return Sent{}, mxerror.New(mxerror.NotFound, "unknown room %s and no server to join it through", roomID)
	}
	if m.Reason != "" {
		content["reason"] = m.Reason
	}
	if err := s.remote.JoinRemote(ctx, roomID, m.Target, servers, content); err != nil {
		return Sent{}, err
	}
	var sent Sent
	err := s.db.QueryRow(ctx, `SELECT e.event_id, e.stream_pos, e.room_seq FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomID, m.Target).Scan(&sent.EventID, &sent.StreamPos, &sent.Seq)
	if err != nil {
		return Sent{}, fmt.Errorf("read remote join: %w", err)
	}
	return sent, nil
}

// Send sends a message or state event.
func (s *Service) Send(ctx context.Context, roomID string, p Proto) (Sent, error) {
	if p.Type == spec.MRoomCreate {
		return Sent{}, mxerror.New(mxerror.Forbidden, "a room has exactly one create event")
	}
	if p.Type != spec.MRoomRedaction { // Redact lets a suspended user take back their own
		if err := s.checkActive(ctx, p.Sender); err != nil {
			return Sent{}, err
		}
	}
	if len(p.Content) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(p.Content, &obj); err != nil {
			return Sent{}, mxerror.New(mxerror.BadJSON, "event content must be a JSON object")
		}
	}
	if p.StateKey == nil && calls.IsCallEvent(p.Type) {
		if err := calls.ValidateEvent(p.Type, p.Content); err != nil {
			return Sent{}, mxerror.New(mxerror.BadJSON, "%v", err)
		}
	}
	if p.Type == spec.MRoomCanonicalAlias && p.StateKey != nil && *p.StateKey == "" {
		if err := s.checkCanonicalAlias(ctx, roomID, p.Content); err != nil {
			return Sent{}, err
		}
	}
	if err := s.checkReplacement(ctx, roomID, p); err != nil {
		return Sent{}, err
	}
	sent, err := s.write(ctx, roomID, nil, []Proto{p})
	if err != nil {
		return Sent{}, s.roomError(err, roomID)
	}
	s.guestAccessChanged(ctx, roomID, p.Type, p.StateKey)
	if p.StateKey != nil && s.cfg.StateWritten != nil {
		s.cfg.StateWritten(ctx, roomID, p.Type, *p.StateKey, p.Sender)
	}
	return sent[0], nil
}

// checkCanonicalAlias enforces that the aliases an m.room.canonical_alias names are
// valid and, when local, point at this room (M_BAD_ALIAS otherwise).
func (s *Service) checkCanonicalAlias(ctx context.Context, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return mxerror.New(mxerror.BadJSON, "alias must be a string and alt_aliases a list of strings")
	}
	aliases := c.AltAliases
	if c.Alias != nil {
		aliases = append(aliases, *c.Alias)
	}
	for _, a := range aliases {
		if !strings.HasPrefix(a, "#") || !strings.Contains(a, ":") {
			return mxerror.New(mxerror.InvalidParam, "%q is not a room alias", a)
		}
		if !strings.HasSuffix(a, ":"+s.cfg.ServerName) {
			continue // remote aliases are checked over federation, which is not built yet
		}
		if target, err := s.ResolveAlias(ctx, a); err != nil || target != roomID {
			return mxerror.New(mxerror.BadAlias, "alias %s does not point to this room", a)
		}
	}
	return nil
}

// Redact redacts an event the sender can see, with an optional reason.
func (s *Service) Redact(ctx context.Context, roomID, sender, eventID, reason string, txn *Txn) (Sent, error) {
	ev, err := s.Event(ctx, roomID, sender, eventID)
	if err != nil {
		// An event of another room is a malformed request (400, as Synapse
		// answers), not an unknown event: a redaction names its own room's events.
		var other string
		if mxerror.Is(err, mxerror.NotFound) && s.db.QueryRow(ctx, `SELECT room_id FROM events WHERE event_id = $1`, eventID).Scan(&other) == nil && other != roomID {
			return Sent{}, mxerror.New(mxerror.InvalidParam, "event %s is not in room %s", eventID, roomID)
		}
		return Sent{}, err
	}
	if ev.Sender != sender {
		if err := s.checkActive(ctx, sender); err != nil {
			return Sent{}, err
		}
	}
	content := map[string]any{"redacts": eventID} // room version 11 moved redacts into content
	if reason != "" {
		content["reason"] = reason
	}
	return s.Send(ctx, roomID, Proto{Sender: sender, Type: spec.MRoomRedaction, Content: mustJSON(content), Redacts: eventID, Txn: txn})
}

// roomError turns a missing room into the client error.
func (s *Service) roomError(err error, roomID string) error {
	if isNotFound(err) {
		return mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
	}
	return err
}

// Forget hides a room the user has left from its room lists.
func (s *Service) Forget(ctx context.Context, userID, roomID string) error {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m == "join" || m == "invite" || m == "knock" {
		return mxerror.New(mxerror.Unknown, "you must leave the room before forgetting it")
	}
	_, err = s.db.Exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT (user_id, room_id) DO NOTHING`, userID, roomID)
	return err
}

// RefreshMemberProfile sends a new join event carrying the user's current profile
// into every room they are joined to, as Synapse does, so that other members see the
// new displayname and avatar. Rooms where the user may no longer send (or where the
// profile is already current) are skipped.
func (s *Service) RefreshMemberProfile(ctx context.Context, userID string) error {
	ids, err := s.JoinedRooms(ctx, userID)
	if err != nil {
		return err
	}
	for _, roomID := range ids {
		want := s.memberContent(ctx, userID, "join", false)
		cur, err := s.currentMemberContent(ctx, roomID, userID)
		if err != nil {
			return err
		}
		if cur["displayname"] == want["displayname"] && cur["avatar_url"] == want["avatar_url"] {
			continue
		}
		if v, ok := cur["is_direct"]; ok {
			want["is_direct"] = v
		}
		target := userID
		_, err = s.write(ctx, roomID, nil, []Proto{{Sender: userID, Type: spec.MRoomMember, StateKey: &target, Content: mustJSON(want)}})
		if mxerror.Is(err, mxerror.Forbidden) {
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) currentMemberContent(ctx context.Context, roomID, userID string) (map[string]any, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomID, userID).Scan(&raw)
	if err != nil {
		return nil, fmt.Errorf("read member event: %w", err)
	}
	var ev struct {
		Content map[string]any `json:"content"`
	}
	if err := json.Unmarshal([]byte(raw), &ev); err != nil {
		return nil, fmt.Errorf("parse member event: %w", err)
	}
	return ev.Content, nil
}

// restrictedJoinAuthoriser decides a self-join into a restricted room: if the join
// rule is restricted (or knock_restricted) and the user is neither invited nor
// joined, they must be joined to one of the rooms the rule allows, and a local member
// able to invite vouches for the join (join_authorised_via_users_server). It returns
// "" when the join needs no voucher.
func (s *Service) restrictedJoinAuthoriser(ctx context.Context, roomID, userID string) (string, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.join_rules' AND c.state_key = ''`, roomID).Scan(&raw)
	if err != nil {
		return "", nil // no join rules (or no room): the auth rules decide
	}
	var jr struct {
		Content struct {
			JoinRule string `json:"join_rule"`
			Allow    []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
		} `json:"content"`
	}
	if err := json.Unmarshal([]byte(raw), &jr); err != nil {
		return "", nil
	}
	if jr.Content.JoinRule != "restricted" && jr.Content.JoinRule != "knock_restricted" {
		return "", nil
	}
	if m, err := s.CurrentMembership(ctx, roomID, userID); err != nil {
		return "", err
	} else if m == "join" || m == "invite" {
		return "", nil
	}
	allowed := false
	for _, a := range jr.Content.Allow {
		if a.Type != "m.room_membership" {
			continue
		}
		if m, err := s.CurrentMembership(ctx, a.RoomID, userID); err != nil {
			return "", err
		} else if m == "join" {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", mxerror.New(mxerror.Forbidden, "you must be a member of one of the rooms this room allows")
	}
	// Any joined local member who may invite can vouch.
	rows, err := s.db.Query(ctx, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'
		ORDER BY stream_pos`, roomID)
	if err != nil {
		return "", fmt.Errorf("members of %s: %w", roomID, err)
	}
	var members []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return "", err
		}
		members = append(members, u)
	}
	rows.Close()
	for _, u := range members {
		if !strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			continue
		}
		level, _, err := s.PowerFor(ctx, roomID, u, "")
		if err != nil {
			return "", err
		}
		if level >= s.inviteLevel(ctx, roomID) {
			return u, nil
		}
	}
	return "", mxerror.New(mxerror.Forbidden, "no member of this server can authorise the join")
}

// inviteLevel is the power needed to invite in the room (0 when unset).
func (s *Service) inviteLevel(ctx context.Context, roomID string) int64 {
	var raw string
	if err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.power_levels' AND c.state_key = ''`, roomID).Scan(&raw); err != nil {
		return 0
	}
	var pl struct {
		Content struct {
			Invite *int64 `json:"invite"`
		} `json:"content"`
	}
	if json.Unmarshal([]byte(raw), &pl) != nil || pl.Content.Invite == nil {
		return 0
	}
	return *pl.Content.Invite
}
