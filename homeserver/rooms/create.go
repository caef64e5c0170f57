package rooms

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// CreateRequest is the body of /createRoom.
type CreateRequest struct {
	Visibility                string          `json:"visibility"`
	RoomAliasName             string          `json:"room_alias_name"`
	Name                      *string         `json:"name"`
	Topic                     *string         `json:"topic"`
	Invite                    []string        `json:"invite"`
	RoomVersion               string          `json:"room_version"`
	CreationContent           json.RawMessage `json:"creation_content"`
	InitialState              []StateEvent    `json:"initial_state"`
	Preset                    string          `json:"preset"`
	IsDirect                  bool            `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage `json:"power_level_content_override"`
}

// StateEvent is one event of initial_state.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// presetRules is what a createRoom preset sets: join rule, history visibility, guest
// access, and whether invitees get the creator's power.
type presetRules struct {
	joinRule, history, guestAccess string
	inviteesAreAdmins              bool
}

// presets are the spec's createRoom presets. public_chat's guest access is
// "forbidden", which is what a room without m.room.guest_access has: like Synapse,
// no event is sent for it (clients and Sytest count the state a new room has).
var presets = map[string]presetRules{
	"private_chat":         {"invite", "shared", "can_join", false},
	"trusted_private_chat": {"invite", "shared", "can_join", true},
	"public_chat":          {"public", "shared", "", false},
}

// createPlan is a checked CreateRequest: the room version, the preset and the alias
// it resolves to.
type createPlan struct {
	version string
	impl    gomatrixserverlib.IRoomVersion
	preset  string
	rules   presetRules
	alias   string // "" for none
}

// CreateRoom creates a room for creator and returns its ID. It checks the request,
// computes the room's first events, writes them in one go, then does what needs the
// room to exist: invites to other servers, the alias and the directory entry.
func (s *Service) CreateRoom(ctx context.Context, creator string, req CreateRequest) (string, error) {
	if err := s.checkActive(ctx, creator); err != nil {
		return "", err
	}
	plan, err := s.checkCreate(ctx, req)
	if err != nil {
		return "", err
	}
	protos, remoteInvites, err := s.initialEvents(ctx, creator, req, plan)
	if err != nil {
		return "", err
	}
	roomID := newRoomID(plan.impl, s.cfg.ServerName)
	sent, err := s.write(ctx, roomID, &roomRow{version: plan.version, creator: creator}, protos)
	if err != nil {
		return "", err
	}
	roomID = roomIDOf(plan.impl, roomID, sent)
	s.inviteOtherServers(ctx, roomID, creator, remoteInvites, req.IsDirect)
	if plan.alias != "" {
		if err := s.SetAlias(ctx, plan.alias, roomID, creator); err != nil {
			return "", err
		}
	}
	if req.Visibility == "public" {
		if err := s.SetVisibility(ctx, roomID, "public"); err != nil {
			return "", err
		}
	}
	return roomID, nil
}

// checkCreate checks the parts of req that decide which room is made (version,
// preset, visibility, invitees, alias) before anything is computed or written.
func (s *Service) checkCreate(ctx context.Context, req CreateRequest) (createPlan, error) {
	version := req.RoomVersion
	if version == "" {
		version = s.cfg.DefaultRoomVersion
	}
	impl, err := versionImpl(version)
	if err != nil {
		return createPlan{}, &mxerror.Error{Code: mxerror.UnsupportedRoomVersion, Message: "room version " + version + " is not supported"}
	}
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	rules, ok := presets[preset]
	if !ok {
		return createPlan{}, mxerror.New(mxerror.InvalidParam, "unknown preset %q", req.Preset)
	}
	if req.Visibility != "" && req.Visibility != "public" && req.Visibility != "private" {
		return createPlan{}, mxerror.New(mxerror.InvalidParam, "visibility must be public or private")
	}
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			return createPlan{}, mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", u)
		}
	}
	var alias string
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# \t\n") {
			return createPlan{}, mxerror.New(mxerror.InvalidParam, "room_alias_name may not contain ':', '#' or whitespace")
		}
		alias = "#" + req.RoomAliasName + ":" + s.cfg.ServerName
		if _, err := s.ResolveAlias(ctx, alias); err == nil {
			return createPlan{}, mxerror.New(mxerror.RoomInUse, "room alias %s already exists", alias)
		}
	}
	return createPlan{version: version, impl: impl, preset: preset, rules: rules, alias: alias}, nil
}

// initialEvents computes the room's first events in the order the spec gives
// (create, creator's join, power levels, alias, preset state, initial_state, name,
// topic, local invites), and returns the invitees on other servers apart: their
// invites need the room to exist.
func (s *Service) initialEvents(ctx context.Context, creator string, req CreateRequest, plan createPlan) (protos []Proto, remoteInvites []string, err error) {
	createContent, err := createEventContent(creator, req, plan)
	if err != nil {
		return nil, nil, err
	}
	powerLevels, err := powerLevelsContent(creator, req, plan)
	if err != nil {
		return nil, nil, err
	}

	state := func(typ, key string, content any) Proto {
		raw, _ := json.Marshal(content)
		k := key
		return Proto{Sender: creator, Type: typ, StateKey: &k, Content: raw}
	}
	protos = []Proto{
		state(spec.MRoomCreate, "", createContent),
		state(spec.MRoomMember, creator, s.memberContent(ctx, creator, "join", false)),
		state(spec.MRoomPowerLevels, "", powerLevels),
	}
	if plan.alias != "" {
		protos = append(protos, state(spec.MRoomCanonicalAlias, "", map[string]string{"alias": plan.alias}))
	}
	protos = append(protos,
		state(spec.MRoomJoinRules, "", map[string]string{"join_rule": plan.rules.joinRule}),
		state(spec.MRoomHistoryVisibility, "", map[string]string{"history_visibility": plan.rules.history}),
	)
	if plan.rules.guestAccess != "" {
		protos = append(protos, state("m.room.guest_access", "", map[string]string{"guest_access": plan.rules.guestAccess}))
	}
	for _, ev := range req.InitialState {
		if ev.Type == "" {
			return nil, nil, mxerror.New(mxerror.BadJSON, "initial_state events need a type")
		}
		if ev.Type == spec.MRoomCreate || ev.Type == spec.MRoomMember {
			return nil, nil, mxerror.New(mxerror.BadJSON, "initial_state may not contain %s", ev.Type)
		}
		protos = append(protos, Proto{Sender: creator, Type: ev.Type, StateKey: &ev.StateKey, Content: ev.Content})
	}
	if req.Name != nil {
		protos = append(protos, state(spec.MRoomName, "", map[string]string{"name": *req.Name}))
	}
	if req.Topic != nil {
		protos = append(protos, state(spec.MRoomTopic, "", map[string]string{"topic": *req.Topic}))
	}
	for _, u := range req.Invite {
		if s.remote != nil && !strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			// Other servers' users are invited through their servers once the
			// room exists: their server must countersign the invite.
			remoteInvites = append(remoteInvites, u)
			continue
		}
		c := s.memberContent(ctx, u, "invite", req.IsDirect)
		protos = append(protos, Proto{Sender: creator, Type: spec.MRoomMember, StateKey: &u, Content: mustJSON(c)})
	}
	return protos, remoteInvites, nil
}

// createEventContent is the m.room.create content: creation_content with the room
// version, the creator where the version wants it, and, in versions with privileged
// creators, the trusted preset's invitees as additional creators.
func createEventContent(creator string, req CreateRequest, plan createPlan) (map[string]any, error) {
	createContent := map[string]any{}
	if len(req.CreationContent) > 0 && string(req.CreationContent) != "null" {
		if err := json.Unmarshal(req.CreationContent, &createContent); err != nil {
			return nil, mxerror.New(mxerror.BadJSON, "creation_content must be an object")
		}
	}
	createContent["room_version"] = plan.version
	if n, err := strconv.Atoi(plan.version); err == nil && n <= 10 {
		createContent["creator"] = creator // room versions 11+ take the creator from sender
	}
	if plan.impl.PrivilegedCreators() && plan.rules.inviteesAreAdmins && len(req.Invite) > 0 {
		createContent["additional_creators"] = req.Invite
	}
	return createContent, nil
}

// powerLevelsContent is the m.room.power_levels content: the defaults, the creator
// (and the trusted preset's invitees) at 100 unless creators outrank power levels,
// then power_level_content_override's keys over the top.
func powerLevelsContent(creator string, req CreateRequest, plan createPlan) (map[string]any, error) {
	users := map[string]int64{creator: 100}
	if plan.impl.PrivilegedCreators() {
		// Creators outrank every power level and may not be listed in them (MSC4289);
		// the trusted preset makes invitees creators too rather than admins.
		delete(users, creator)
	} else if plan.rules.inviteesAreAdmins {
		for _, u := range req.Invite {
			users[u] = 100
		}
	}
	invite := int64(0)
	if plan.preset == "public_chat" {
		invite = 50
	}
	powerLevels := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": invite,
		"events": map[string]int64{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]int64{"room": 50},
	}
	if len(req.PowerLevelContentOverride) > 0 && string(req.PowerLevelContentOverride) != "null" {
		var override map[string]json.RawMessage
		if err := json.Unmarshal(req.PowerLevelContentOverride, &override); err != nil {
			return nil, mxerror.New(mxerror.BadJSON, "power_level_content_override must be an object")
		}
		for k, v := range override {
			powerLevels[k] = v
		}
	}
	return powerLevels, nil
}

// inviteOtherServers invites users on other servers into the new room through their
// servers. A failure is logged, not returned: the room exists, and an unreachable
// invitee's server does not undo it.
func (s *Service) inviteOtherServers(ctx context.Context, roomID, creator string, users []string, isDirect bool) {
	for _, u := range users {
		if _, err := s.SetMembership(ctx, roomID, Membership{Sender: creator, Target: u, Membership: "invite", IsDirect: isDirect}); err != nil {
			slog.Warn("invite at room creation", "room_id", roomID, "user_id", u, "err", err)
		}
	}
}

// memberContent is the content of a membership event about userID, with the local
// user's profile as Synapse includes it.
func (s *Service) memberContent(ctx context.Context, userID, membership string, isDirect bool) map[string]any {
	c := map[string]any{"membership": membership}
	if s.cfg.Profiles != nil && strings.HasSuffix(userID, ":"+s.cfg.ServerName) {
		name, avatar := s.cfg.Profiles.MemberProfile(ctx, userID)
		if name != "" {
			c["displayname"] = name
		}
		if avatar != "" {
			c["avatar_url"] = avatar
		}
	}
	if isDirect {
		c["is_direct"] = true
	}
	return c
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with maps of plain values
	}
	return b
}

// newRoomID is a new room's ID, or "" when the room version derives it from the
// create event (v12), which write then does.
func newRoomID(impl gomatrixserverlib.IRoomVersion, serverName string) string {
	if impl.DomainlessRoomIDs() {
		return ""
	}
	return "!" + randomID() + ":" + serverName
}

// roomIDOf is the ID of a room write created: roomID, or the one derived from the
// create event, the first event sent.
func roomIDOf(impl gomatrixserverlib.IRoomVersion, roomID string, sent []Sent) string {
	if impl.DomainlessRoomIDs() {
		return "!" + sent[0].EventID[1:]
	}
	return roomID
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:16]
}
