package social

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/rooms"
)

// Power levels of a group: the owner has OwnerLevel; an owner who hands the group
// over keeps AdminLevel (they may still moderate; the new owner can demote them).
const (
	OwnerLevel = 100
	AdminLevel = 50
)

// Roles a member list names.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Group is one of a user's groups.
type Group struct {
	RoomID       string `json:"room_id"`
	Name         string `json:"name"`
	AvatarURL    string `json:"avatar_url,omitempty"`
	Announcement string `json:"announcement,omitempty"`
	Owner        string `json:"owner"`
	Members      int    `json:"joined_members"`
	Muted        bool   `json:"muted"`
}

// Member is a group member and their role.
type Member struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
	Role        string  `json:"role"`
	PowerLevel  int64   `json:"power_level"`
}

// CreateGroup creates a group owned by owner with initial members invited. More
// members than MaxGroupMembers allows is M_RESOURCE_LIMIT_EXCEEDED.
func (s *Service) CreateGroup(ctx context.Context, owner, name string, members []string) (string, error) {
	if name == "" {
		return "", mxerror.New(mxerror.MissingParam, "name is required")
	}
	if len(name) > 255 {
		return "", mxerror.New(mxerror.TooLarge, "name is longer than 255 bytes")
	}
	seen := map[string]bool{owner: true}
	var invite []string
	for _, m := range members {
		if _, err := spec.NewUserID(m, true); err != nil {
			return "", mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", m)
		}
		if !seen[m] {
			seen[m] = true
			invite = append(invite, m)
		}
	}
	if len(invite)+1 > s.cfg.MaxGroupMembers {
		return "", s.full()
	}
	for _, m := range invite {
		if err := s.checkUser(ctx, m); err != nil {
			return "", err
		}
	}
	create, _ := json.Marshal(map[string]any{GroupMarker: map[string]any{"version": 1}})
	pl, _ := json.Marshal(map[string]any{
		"users":  map[string]any{owner: OwnerLevel},
		"events": map[string]any{GroupMarker: OwnerLevel, spec.MRoomPowerLevels: OwnerLevel, "m.room.tombstone": OwnerLevel},
	})
	marker, _ := json.Marshal(map[string]any{"owner": owner, "dissolved": false})
	roomID, err := s.d.Rooms.CreateRoom(ctx, owner, rooms.CreateRequest{
		Preset: "private_chat", Name: &name, Invite: invite, CreationContent: create, PowerLevelContentOverride: pl,
		InitialState: []rooms.StateEvent{{Type: GroupMarker, Content: marker}},
	})
	if err != nil {
		return "", err
	}
	return roomID, nil
}

func (s *Service) full() error {
	return mxerror.New(mxerror.ResourceLimitExceeded, "a group has at most %d members", s.cfg.MaxGroupMembers)
}

// CheckMembership is the rooms engine's MembershipGate: in a group, an invite or a
// join that would take it past MaxGroupMembers is M_RESOURCE_LIMIT_EXCEEDED, and a
// dissolved group takes no one.
func (s *Service) CheckMembership(ctx context.Context, roomID string, m rooms.Membership) error {
	group, err := s.isGroup(ctx, roomID)
	if err != nil || !group {
		return err
	}
	cur, err := s.d.Rooms.CurrentMembership(ctx, roomID, m.Target)
	if err != nil {
		return err
	}
	if cur == spec.Join || (m.Membership == spec.Invite && cur == spec.Invite) {
		return nil // changes nothing the cap counts
	}
	joined, invited, err := s.d.Rooms.MemberCounts(ctx, roomID)
	if err != nil {
		return err
	}
	n := joined + invited + 1
	if cur == spec.Invite {
		n-- // a join of an invitee, counted already
	}
	if n > s.cfg.MaxGroupMembers {
		return s.full()
	}
	return nil
}

// groupState is what a group's current state says, read as member userID.
type groupState struct {
	owner, name, avatar, topic string
	dissolved                  bool
	levels                     map[string]int64
	usersDefault               int64
	powerContent               map[string]any
}

func (s *Service) readGroup(ctx context.Context, userID, roomID string) (groupState, error) {
	if err := rooms.CheckRoomID(roomID); err != nil {
		return groupState{}, err
	}
	if err := s.d.Rooms.RequireJoined(ctx, roomID, userID); err != nil {
		return groupState{}, err
	}
	if g, err := s.isGroup(ctx, roomID); err != nil {
		return groupState{}, err
	} else if !g {
		return groupState{}, mxerror.New(mxerror.NotFound, "%s is not a group", roomID)
	}
	evs, err := s.d.Rooms.State(ctx, roomID, userID)
	if err != nil {
		return groupState{}, err
	}
	g := groupState{levels: map[string]int64{}}
	for _, e := range evs {
		if e.StateKey == nil || *e.StateKey != "" {
			continue
		}
		c := gjson.ParseBytes(e.Content)
		switch e.Type {
		case GroupMarker:
			g.owner, g.dissolved = c.Get("owner").String(), c.Get("dissolved").Bool()
		case spec.MRoomName:
			g.name = c.Get("name").String()
		case "m.room.avatar":
			g.avatar = c.Get("url").String()
		case spec.MRoomTopic:
			g.topic = c.Get("topic").String()
		case spec.MRoomPowerLevels:
			json.Unmarshal(e.Content, &g.powerContent)
			g.usersDefault = c.Get("users_default").Int()
			c.Get("users").ForEach(func(k, v gjson.Result) bool {
				g.levels[k.String()] = v.Int()
				return true
			})
		}
	}
	return g, nil
}

func (g groupState) level(userID string) int64 {
	if l, ok := g.levels[userID]; ok {
		return l
	}
	return g.usersDefault
}

// Groups lists the groups the user is joined to.
func (s *Service) Groups(ctx context.Context, userID string) ([]Group, error) {
	joined, err := s.d.Rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := []Group{}
	muted := s.mutedRooms(ctx, userID)
	for _, roomID := range joined {
		if g, err := s.isGroup(ctx, roomID); err != nil {
			return nil, err
		} else if !g {
			continue
		}
		st, err := s.readGroup(ctx, userID, roomID)
		if err != nil {
			return nil, err
		}
		n, _, err := s.d.Rooms.MemberCounts(ctx, roomID)
		if err != nil {
			return nil, err
		}
		out = append(out, Group{RoomID: roomID, Name: st.name, AvatarURL: st.avatar, Announcement: st.topic, Owner: st.owner, Members: n, Muted: muted[roomID]})
	}
	return out, nil
}

// GroupMembers lists a group's joined members with their roles; the caller must
// be a member.
func (s *Service) GroupMembers(ctx context.Context, userID, roomID string) ([]Member, error) {
	st, err := s.readGroup(ctx, userID, roomID)
	if err != nil {
		return nil, err
	}
	joined, err := s.d.Rooms.JoinedMembers(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(joined))
	for u, m := range joined {
		lvl := st.level(u)
		role := RoleMember
		switch {
		case u == st.owner:
			role = RoleOwner
		case lvl >= AdminLevel:
			role = RoleAdmin
		}
		out = append(out, Member{UserID: u, DisplayName: m.DisplayName, AvatarURL: m.AvatarURL, Role: role, PowerLevel: lvl})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].PowerLevel != out[j].PowerLevel {
			return out[i].PowerLevel > out[j].PowerLevel
		}
		return out[i].UserID < out[j].UserID
	})
	return out, nil
}

// InviteToGroup invites target; the room's power levels say who may.
func (s *Service) InviteToGroup(ctx context.Context, userID, roomID, target string) error {
	if _, err := s.readGroup(ctx, userID, roomID); err != nil {
		return err
	}
	if err := s.checkUser(ctx, target); err != nil {
		return err
	}
	_, err := s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: userID, Target: target, Membership: spec.Invite})
	return err
}

// JoinGroup joins a group the user was invited to.
func (s *Service) JoinGroup(ctx context.Context, userID, roomID string) error {
	if err := rooms.CheckRoomID(roomID); err != nil {
		return err
	}
	_, err := s.d.Rooms.JoinByIDOrAlias(ctx, rooms.SelfJoin{UserID: userID, Room: roomID, Via: []string{serverOf(roomID)}})
	return err
}

// LeaveGroup leaves a group. The owner must hand it over or dissolve it first
// (M_FORBIDDEN), so that a group always has an owner.
func (s *Service) LeaveGroup(ctx context.Context, userID, roomID string) error {
	if err := rooms.CheckRoomID(roomID); err != nil {
		return err
	}
	if m, err := s.d.Rooms.CurrentMembership(ctx, roomID, userID); err != nil {
		return err
	} else if m == spec.Invite {
		// Declining an invite to the group.
		_, err := s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: userID, Target: userID, Membership: spec.Leave})
		return err
	}
	st, err := s.readGroup(ctx, userID, roomID)
	if err != nil {
		return err
	}
	if st.owner == userID && !st.dissolved {
		return mxerror.New(mxerror.Forbidden, "the owner cannot leave: transfer the group or dissolve it")
	}
	_, err = s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: userID, Target: userID, Membership: spec.Leave})
	return err
}

// KickFromGroup removes a member; the room's power levels say who may.
func (s *Service) KickFromGroup(ctx context.Context, userID, roomID, target, reason string) error {
	st, err := s.readGroup(ctx, userID, roomID)
	if err != nil {
		return err
	}
	if target == st.owner {
		return mxerror.New(mxerror.Forbidden, "the owner cannot be removed")
	}
	_, err = s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: userID, Target: target, Membership: "kick", Reason: reason})
	return err
}

// TransferGroup hands the group to newOwner, a joined member: in one power levels
// event newOwner gets OwnerLevel and the old owner AdminLevel, and the group's
// marker names the new owner. Only the owner may (M_FORBIDDEN).
func (s *Service) TransferGroup(ctx context.Context, userID, roomID, newOwner string) error {
	st, err := s.readGroup(ctx, userID, roomID)
	if err != nil {
		return err
	}
	if st.owner != userID {
		return mxerror.New(mxerror.Forbidden, "only the group's owner can transfer it")
	}
	if st.dissolved {
		return mxerror.New(mxerror.Forbidden, "the group was dissolved")
	}
	if newOwner == userID {
		return mxerror.New(mxerror.InvalidParam, "you own the group already")
	}
	if m, err := s.d.Rooms.CurrentMembership(ctx, roomID, newOwner); err != nil {
		return err
	} else if m != spec.Join {
		return mxerror.New(mxerror.InvalidParam, "%s is not a member of the group", newOwner)
	}
	pl := st.powerContent
	if pl == nil {
		pl = map[string]any{}
	}
	usersMap, _ := pl["users"].(map[string]any)
	if usersMap == nil {
		usersMap = map[string]any{}
	}
	usersMap[newOwner], usersMap[userID] = OwnerLevel, AdminLevel
	pl["users"] = usersMap
	// The marker first, while the old owner still has the power to send it.
	if err := s.sendState(ctx, userID, roomID, GroupMarker, map[string]any{"owner": newOwner, "dissolved": false}); err != nil {
		return err
	}
	return s.sendState(ctx, userID, roomID, spec.MRoomPowerLevels, pl)
}

// GroupUpdate changes a group's profile; nil fields stay.
type GroupUpdate struct {
	Name         *string `json:"name,omitempty"`
	AvatarURL    *string `json:"avatar_url,omitempty"`
	Announcement *string `json:"announcement,omitempty"`
}

// UpdateGroup renames a group, sets its avatar (an mxc:// URI) or its
// announcement (the room topic). The room's power levels say who may.
func (s *Service) UpdateGroup(ctx context.Context, userID, roomID string, u GroupUpdate) error {
	if _, err := s.readGroup(ctx, userID, roomID); err != nil {
		return err
	}
	if u.Name == nil && u.AvatarURL == nil && u.Announcement == nil {
		return mxerror.New(mxerror.MissingParam, "name, avatar_url or announcement is required")
	}
	if u.Name != nil {
		if *u.Name == "" || len(*u.Name) > 255 {
			return mxerror.New(mxerror.InvalidParam, "a group name has 1 to 255 bytes")
		}
		if err := s.sendState(ctx, userID, roomID, spec.MRoomName, map[string]any{"name": *u.Name}); err != nil {
			return err
		}
	}
	if u.AvatarURL != nil {
		if *u.AvatarURL != "" && !isMXC(*u.AvatarURL) {
			return mxerror.New(mxerror.InvalidParam, "avatar_url must be an mxc:// URI")
		}
		if err := s.sendState(ctx, userID, roomID, "m.room.avatar", map[string]any{"url": *u.AvatarURL}); err != nil {
			return err
		}
	}
	if u.Announcement != nil {
		if err := s.sendState(ctx, userID, roomID, spec.MRoomTopic, map[string]any{"topic": *u.Announcement}); err != nil {
			return err
		}
	}
	return nil
}

func isMXC(s string) bool { return len(s) > 6 && s[:6] == "mxc://" }

// MuteGroup mutes (or unmutes) a group for the user: a room push rule with no
// actions, the spec's way, so every client of the user sees it muted.
func (s *Service) MuteGroup(ctx context.Context, userID, roomID string, muted bool) error {
	if _, err := s.readGroup(ctx, userID, roomID); err != nil {
		return err
	}
	if s.d.Push == nil {
		return mxerror.New(mxerror.Unrecognized, "push rules are not available")
	}
	if muted {
		return s.d.Push.PutRule(ctx, userID, "global", "room", roomID, "", "", push.Rule{Actions: []json.RawMessage{}})
	}
	err := s.d.Push.DeleteRule(ctx, userID, "global", "room", roomID)
	if mxerror.Is(err, mxerror.NotFound) {
		return nil
	}
	return err
}

// mutedRooms is the set of rooms the user muted with a room rule without actions.
func (s *Service) mutedRooms(ctx context.Context, userID string) map[string]bool {
	out := map[string]bool{}
	if s.d.Push == nil {
		return out
	}
	rs, err := s.d.Push.Rules(ctx, userID)
	if err != nil {
		return out
	}
	for _, r := range rs.Room {
		if r.Enabled && len(r.Actions) == 0 {
			out[r.RuleID] = true
		}
	}
	return out
}

// DissolveGroup ends a group; only its owner may (M_FORBIDDEN). The marker says
// dissolved, the join rule becomes private and inviting takes the owner's power,
// so no one can join again; every other member and invitee is removed, and the
// owner leaves last.
func (s *Service) DissolveGroup(ctx context.Context, userID, roomID string) error {
	st, err := s.readGroup(ctx, userID, roomID)
	if err != nil {
		return err
	}
	if st.owner != userID {
		return mxerror.New(mxerror.Forbidden, "only the group's owner can dissolve it")
	}
	if err := s.sendState(ctx, userID, roomID, GroupMarker, map[string]any{"owner": userID, "dissolved": true}); err != nil {
		return err
	}
	if err := s.sendState(ctx, userID, roomID, spec.MRoomJoinRules, map[string]any{"join_rule": "private"}); err != nil {
		return err
	}
	pl := st.powerContent
	if pl == nil {
		pl = map[string]any{}
	}
	pl["invite"] = OwnerLevel
	if err := s.sendState(ctx, userID, roomID, spec.MRoomPowerLevels, pl); err != nil {
		return err
	}
	members, err := s.d.Rooms.Members(ctx, roomID, userID, rooms.MembersQuery{})
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.StateKey == nil || *m.StateKey == userID {
			continue
		}
		ms := gjson.GetBytes(m.Content, "membership").String()
		if ms != spec.Join && ms != spec.Invite {
			continue
		}
		if _, err := s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: userID, Target: *m.StateKey, Membership: "kick", Reason: "the group was dissolved"}); err != nil {
			var mx *mxerror.Error
			if !errors.As(err, &mx) {
				return err
			}
		}
	}
	_, err = s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: userID, Target: userID, Membership: spec.Leave})
	return err
}

func (s *Service) sendState(ctx context.Context, userID, roomID, typ string, content map[string]any) error {
	raw, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("%s content: %w", typ, err)
	}
	empty := ""
	_, err = s.d.Rooms.Send(ctx, roomID, rooms.Proto{Sender: userID, Type: typ, StateKey: &empty, Content: raw})
	return err
}
