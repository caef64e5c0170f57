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

// presets are the spec's createRoom presets: join rule, history visibility, guest
// access, and whether invitees get the creator's power.
var presets = map[string]struct {
	joinRule, history, guestAccess string
	inviteesAreAdmins              bool
}{
	"private_chat":         {"invite", "shared", "can_join", false},
	"trusted_private_chat": {"invite", "shared", "can_join", true},
	"public_chat":          {"public", "shared", "forbidden", false},
}

// CreateRoom creates a room for creator and returns its ID.
func (s *Service) CreateRoom(ctx context.Context, creator string, req CreateRequest) (string, error) {
	version := req.RoomVersion
	if version == "" {
		version = s.cfg.DefaultRoomVersion
	}
	impl, err := versionImpl(version)
	if err != nil {
		return "", &mxerror.Error{Code: mxerror.UnsupportedRoomVersion, Message: "room version " + version + " is not supported"}
	}
	preset := req.Preset
	if preset == "" {
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	}
	p, ok := presets[preset]
	if !ok {
		return "", mxerror.New(mxerror.InvalidParam, "unknown preset %q", req.Preset)
	}
	if req.Visibility != "" && req.Visibility != "public" && req.Visibility != "private" {
		return "", mxerror.New(mxerror.InvalidParam, "visibility must be public or private")
	}
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			return "", mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", u)
		}
	}
	roomID := newRoomID(impl, s.cfg.ServerName)
	var alias string
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# \t\n") {
			return "", mxerror.New(mxerror.InvalidParam, "room_alias_name may not contain ':', '#' or whitespace")
		}
		alias = "#" + req.RoomAliasName + ":" + s.cfg.ServerName
		if _, err := s.ResolveAlias(ctx, alias); err == nil {
			return "", mxerror.New(mxerror.RoomInUse, "room alias %s already exists", alias)
		}
	}

	createContent := map[string]any{}
	if len(req.CreationContent) > 0 && string(req.CreationContent) != "null" {
		if err := json.Unmarshal(req.CreationContent, &createContent); err != nil {
			return "", mxerror.New(mxerror.BadJSON, "creation_content must be an object")
		}
	}
	createContent["room_version"] = version
	if n, err := strconv.Atoi(version); err == nil && n <= 10 {
		createContent["creator"] = creator // room versions 11+ take the creator from sender
	}

	users := map[string]int64{creator: 100}
	if impl.PrivilegedCreators() {
		// Creators outrank every power level and may not be listed in them (MSC4289);
		// the trusted preset makes invitees creators too rather than admins.
		delete(users, creator)
		if p.inviteesAreAdmins && len(req.Invite) > 0 {
			createContent["additional_creators"] = req.Invite
		}
	} else if p.inviteesAreAdmins {
		for _, u := range req.Invite {
			users[u] = 100
		}
	}
	invite := int64(0)
	if preset == "public_chat" {
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
			return "", mxerror.New(mxerror.BadJSON, "power_level_content_override must be an object")
		}
		for k, v := range override {
			powerLevels[k] = v
		}
	}

	empty := ""
	state := func(typ, key string, content any) Proto {
		raw, _ := json.Marshal(content)
		k := key
		return Proto{Sender: creator, Type: typ, StateKey: &k, Content: raw}
	}
	protos := []Proto{
		state(spec.MRoomCreate, "", createContent),
		state(spec.MRoomMember, creator, s.memberContent(ctx, creator, "join", false)),
		state(spec.MRoomPowerLevels, "", powerLevels),
	}
	if alias != "" {
		protos = append(protos, state(spec.MRoomCanonicalAlias, "", map[string]string{"alias": alias}))
	}
	protos = append(protos,
		state(spec.MRoomJoinRules, "", map[string]string{"join_rule": p.joinRule}),
		state(spec.MRoomHistoryVisibility, "", map[string]string{"history_visibility": p.history}),
	)
	if p.guestAccess != "" {
		protos = append(protos, state("m.room.guest_access", "", map[string]string{"guest_access": p.guestAccess}))
	}
	for _, ev := range req.InitialState {
		if ev.Type == "" {
			return "", mxerror.New(mxerror.BadJSON, "initial_state events need a type")
		}
		if ev.Type == spec.MRoomCreate || ev.Type == spec.MRoomMember {
			return "", mxerror.New(mxerror.BadJSON, "initial_state may not contain %s", ev.Type)
		}
		protos = append(protos, Proto{Sender: creator, Type: ev.Type, StateKey: &ev.StateKey, Content: ev.Content})
	}
	if req.Name != nil {
		protos = append(protos, state(spec.MRoomName, empty, map[string]string{"name": *req.Name}))
	}
	if req.Topic != nil {
		protos = append(protos, state(spec.MRoomTopic, empty, map[string]string{"topic": *req.Topic}))
	}
	var remoteInvites []string
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
	sent, err := s.write(ctx, roomID, &roomRow{version: version, creator: creator}, protos)
	if err != nil {
		return "", err
	}
	roomID = roomIDOf(impl, roomID, sent)
	for _, u := range remoteInvites {
		if _, err := s.SetMembership(ctx, roomID, Membership{Sender: creator, Target: u, Membership: "invite", IsDirect: req.IsDirect}); err != nil {
			// The room exists; an unreachable invitee's server does not undo it.
			slog.Warn("invite at room creation", "room_id", roomID, "user_id", u, "err", err)
		}
	}
	if alias != "" {
		if err := s.SetAlias(ctx, alias, roomID, creator); err != nil {
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
