package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// copiedOnUpgrade are the state events a room upgrade carries into the new room.
var copiedOnUpgrade = []string{
	spec.MRoomJoinRules, spec.MRoomHistoryVisibility, "m.room.guest_access", spec.MRoomName, spec.MRoomTopic,
	"m.room.avatar", "m.room.encryption", "m.room.server_acl", "m.room.related_groups", spec.MRoomCanonicalAlias,
}

// Upgrade replaces a room with a new one of another version, as the spec's /upgrade
// describes: a new room whose create event points back at the old one, the old
// room's important state copied over, its local aliases moved, a tombstone in the old
// room, and the old room restricted so conversation moves on.
func (s *Service) Upgrade(ctx context.Context, roomID, userID, newVersion string) (string, error) {
	impl, err := versionImpl(newVersion)
	if err != nil {
		return "", &mxerror.Error{Code: mxerror.UnsupportedRoomVersion, Message: "room version " + newVersion + " is not supported"}
	}
	if ok, err := s.roomExists(ctx, roomID); err != nil {
		return "", err
	} else if !ok {
		return "", mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
	}
	level, need, err := s.PowerFor(ctx, roomID, userID, "m.room.tombstone")
	if err != nil {
		return "", err
	}
	if m, err := s.CurrentMembership(ctx, roomID, userID); err != nil {
		return "", err
	} else if m != "join" {
		return "", mxerror.New(mxerror.Forbidden, "you are not in room %s", roomID)
	}
	if level < need {
		return "", mxerror.New(mxerror.Forbidden, "you need power level %d to upgrade this room", need)
	}
	state, err := s.State(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	byType := map[string]ClientEvent{}
	for _, ev := range state {
		if ev.StateKey != nil && *ev.StateKey == "" {
			byType[ev.Type] = ev
		}
	}
	str := func(typ string, content any) Proto {
		empty := ""
		return Proto{Sender: userID, Type: typ, StateKey: &empty, Content: mustJSON(content)}
	}
	newRoomID := newRoomID(impl, s.cfg.ServerName)
	tombstoneContent := func(newRoomID string) map[string]string {
		return map[string]string{"body": "This room has been replaced", "replacement_room": newRoomID}
	}
	// predecessor.event_id names the old room's tombstone, as Synapse does and
	// clients follow. When the new room's ID is known before its create event
	// (versions before 12), the tombstone is built first and admitted once the new
	// room exists; a v12 room's ID hashes its create event, which cannot name a
	// tombstone that names the room, so it names the old room's latest event.
	var tombstone gomatrixserverlib.PDU
	predecessorID := ""
	if newRoomID != "" {
		if tombstone, err = s.buildUnsent(ctx, roomID, str("m.room.tombstone", tombstoneContent(newRoomID))); err != nil {
			return "", err
		}
		predecessorID = tombstone.EventID()
	} else if predecessorID, err = s.LatestEventID(ctx, roomID); err != nil {
		return "", fmt.Errorf("latest event of %s: %w", roomID, err)
	}

	createContent := map[string]any{"room_version": newVersion, "predecessor": map[string]string{"room_id": roomID, "event_id": predecessorID}}
	if old, ok := byType[spec.MRoomCreate]; ok {
		var c map[string]any
		json.Unmarshal(old.Content, &c)
		if t, ok := c["type"]; ok {
			createContent["type"] = t
		}
		if f, ok := c["m.federate"]; ok {
			createContent["m.federate"] = f
		}
	}
	if n, err := strconv.Atoi(newVersion); err == nil && n <= 10 {
		createContent["creator"] = userID // versions 11+ take the creator from sender
	}

	// Power levels: the old ones, with the upgrader lifted so the copy can be sent,
	// then restored once the state is in.
	var oldPL map[string]any
	if pl, ok := byType[spec.MRoomPowerLevels]; ok {
		json.Unmarshal(pl.Content, &oldPL)
	}
	if oldPL == nil {
		oldPL = map[string]any{"users": map[string]any{userID: 100}}
	}
	boosted := copyMap(oldPL)
	users, _ := boosted["users"].(map[string]any)
	users = copyMap(users)
	if lvl, _ := users[userID].(float64); lvl < 100 {
		users[userID] = 100 // never lowered: an upgrader above 100 keeps their level
	}
	if impl.PrivilegedCreators() {
		// The upgrader creates the new room and so outranks everyone; creators may
		// not appear in its power levels (MSC4289).
		delete(users, userID)
		restored := copyMap(oldPL)
		kept, _ := restored["users"].(map[string]any)
		kept = copyMap(kept)
		delete(kept, userID)
		restored["users"] = kept
		oldPL = restored
	}
	boosted["users"] = users

	self := userID
	protos := []Proto{
		str(spec.MRoomCreate, createContent),
		{Sender: userID, Type: spec.MRoomMember, StateKey: &self, Content: mustJSON(s.memberContent(ctx, userID, "join", false))},
		str(spec.MRoomPowerLevels, boosted),
	}
	for _, typ := range copiedOnUpgrade {
		if ev, ok := byType[typ]; ok {
			empty := ""
			protos = append(protos, Proto{Sender: userID, Type: typ, StateKey: &empty, Content: ev.Content})
		} else if typ == "m.room.guest_access" {
			// A room without the event forbids guests; the new room says so
			// explicitly, as Synapse's upgrade does (clients and Sytest expect the
			// upgraded room to carry its guest access).
			empty := ""
			protos = append(protos, Proto{Sender: userID, Type: typ, StateKey: &empty, Content: mustJSON(map[string]string{"guest_access": "forbidden"})})
		}
	}
	// Bans carry over, so that whoever was kept out stays out.
	for _, ev := range state {
		if ev.Type == spec.MRoomMember && ev.StateKey != nil && gjson.GetBytes(ev.Content, "membership").String() == "ban" {
			banned := *ev.StateKey
			content := map[string]any{"membership": "ban"}
			if reason := gjson.GetBytes(ev.Content, "reason"); reason.Type == gjson.String {
				content["reason"] = reason.String()
			}
			protos = append(protos, Proto{Sender: userID, Type: spec.MRoomMember, StateKey: &banned, Content: mustJSON(content)})
		}
	}
	protos = append(protos, str(spec.MRoomPowerLevels, oldPL))
	sent, err := s.write(ctx, newRoomID, &roomRow{version: newVersion, creator: userID}, protos)
	if err != nil {
		return "", err
	}
	newRoomID = roomIDOf(impl, newRoomID, sent)

	if _, err := s.db.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, newRoomID, roomID); err != nil {
		return "", fmt.Errorf("move aliases: %w", err)
	}
	if vis, err := s.Visibility(ctx, roomID); err == nil && vis == "public" {
		if err := s.SetVisibility(ctx, newRoomID, "public"); err != nil {
			return "", err
		}
		if err := s.SetVisibility(ctx, roomID, "private"); err != nil {
			return "", err
		}
	}

	// Tombstone, then restrict the old room: nobody below moderator may speak or invite.
	restricted := copyMap(oldPL)
	usersDefault, _ := restricted["users_default"].(float64)
	lvl := max(50, usersDefault+1)
	restricted["events_default"], restricted["invite"] = lvl, lvl
	var oldProtos []Proto
	if tombstone != nil {
		if err := s.Receive(ctx, tombstone); err != nil {
			return "", fmt.Errorf("tombstone %s: %w", roomID, err)
		}
	} else {
		oldProtos = append(oldProtos, str("m.room.tombstone", tombstoneContent(newRoomID)))
	}
	if _, ok := byType[spec.MRoomCanonicalAlias]; ok {
		oldProtos = append(oldProtos, str(spec.MRoomCanonicalAlias, map[string]any{}))
	}
	oldProtos = append(oldProtos, str(spec.MRoomPowerLevels, restricted))
	if _, err := s.write(ctx, roomID, nil, oldProtos); err != nil {
		return "", err
	}
	if s.cfg.UserRoomState != nil {
		if err := s.cfg.UserRoomState.RoomUpgraded(ctx, userID, roomID, newRoomID); err != nil {
			// The upgrade is done; a tag or m.direct entry left behind is the
			// client's to fix, not a reason to report failure.
			slog.Warn("carry user room state over an upgrade", "room_id", roomID, "new_room_id", newRoomID, "user_id", userID, "err", err)
		}
	}
	return newRoomID, nil
}

// followUpgrade runs when a local user has joined a room through another server:
// if the room replaces one whose tombstone names it (an upgrade made elsewhere),
// this server's aliases of the old room move to it, and so does its place in the
// public directory, as the upgrading server did for its own. Requiring the
// tombstone keeps a room that only claims a predecessor from taking its aliases.
func (s *Service) followUpgrade(ctx context.Context, roomID string) error {
	var createRaw, tombRaw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.create' AND c.state_key = ''`, roomID).Scan(&createRaw)
	if err != nil {
		return nil // the create event is not held: nothing to follow
	}
	old := gjson.Get(createRaw, "content.predecessor.room_id").String()
	if old == "" || old == roomID {
		return nil
	}
	err = s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.tombstone' AND c.state_key = ''`, old).Scan(&tombRaw)
	if err != nil || gjson.Get(tombRaw, "content.replacement_room").String() != roomID {
		return nil
	}
	if _, err := s.db.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, roomID, old); err != nil {
		return fmt.Errorf("move aliases of %s: %w", old, err)
	}
	if vis, err := s.Visibility(ctx, old); err == nil && vis == "public" {
		if err := s.SetVisibility(ctx, roomID, "public"); err != nil {
			return err
		}
		return s.SetVisibility(ctx, old, "private")
	}
	return nil
}

// LatestEventID is the room's most recent event.
func (s *Service) LatestEventID(ctx context.Context, roomID string) (string, error) {
	var id string
	err := s.db.QueryRow(ctx, `SELECT event_id FROM events WHERE room_id = $1 ORDER BY stream_pos DESC LIMIT 1`, roomID).Scan(&id)
	return id, err
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
