package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// PushState is a room as push-rule evaluation sees it at one event: the state
// before the event.
type PushState struct {
	// Joined maps every user joined before the event, of every server, to their
	// display name in the room ("" when they have none).
	Joined map[string]string
	// PowerLevels is the m.room.power_levels content (nil when there is none).
	PowerLevels json.RawMessage
	// Creators are the room's creators; PrivilegedCreators says whether the room
	// version ranks them above every power level (v12).
	Creators           []string
	PrivilegedCreators bool
}

// PushStateBefore returns the room's members, power levels and creators in the
// state before an event of the timeline. The push evaluator reads it once per
// room and then follows the room's state events itself.
func (s *Service) PushStateBefore(ctx context.Context, eventID string) (PushState, error) {
	var before int64
	if err := s.db.QueryRow(ctx, `SELECT snapshot_before FROM events WHERE event_id = $1`, eventID).Scan(&before); err != nil {
		return PushState{}, fmt.Errorf("push state before %s: %w", eventID, err)
	}
	state, err := s.snapshotState(ctx, before, nil)
	if err != nil {
		return PushState{}, fmt.Errorf("push state before %s: %w", eventID, err)
	}
	ps := PushState{Joined: map[string]string{}}
	var members []string
	var create, pl string
	for k, id := range state {
		switch {
		case k[0] == spec.MRoomMember:
			members = append(members, id)
		case k[0] == spec.MRoomCreate && k[1] == "":
			create = id
		case k[0] == spec.MRoomPowerLevels && k[1] == "":
			pl = id
		}
	}
	for start := 0; start < len(members); start += 500 {
		batch := members[start:min(start+500, len(members))]
		marks, args := storage.InList(batch)
		rows, err := s.db.Query(ctx, `SELECT state_key, json FROM events WHERE membership = 'join' AND event_id IN (`+marks+`)`, args...)
		if err != nil {
			return PushState{}, fmt.Errorf("push state before %s: members: %w", eventID, err)
		}
		for rows.Next() {
			var user, raw string
			if err := rows.Scan(&user, &raw); err != nil {
				rows.Close()
				return PushState{}, fmt.Errorf("push state before %s: members: %w", eventID, err)
			}
			ps.Joined[user] = gjson.Get(raw, "content.displayname").String()
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return PushState{}, fmt.Errorf("push state before %s: members: %w", eventID, err)
		}
	}
	for _, id := range []string{create, pl} {
		if id == "" {
			continue
		}
		var raw string
		if err := s.db.QueryRow(ctx, `SELECT json FROM events WHERE event_id = $1`, id).Scan(&raw); err != nil {
			return PushState{}, fmt.Errorf("push state before %s: %w", eventID, err)
		}
		ev := gjson.Parse(raw)
		if id == pl {
			ps.PowerLevels = json.RawMessage(ev.Get("content").Raw)
			continue
		}
		ps.Creators = append(ps.Creators, ev.Get("sender").String())
		for _, c := range ev.Get("content.additional_creators").Array() {
			ps.Creators = append(ps.Creators, c.String())
		}
		version := ev.Get("content.room_version").String()
		if version == "" {
			version = "1" // a create event without room_version is a v1 room
		}
		if impl, err := versionImpl(version); err == nil {
			ps.PrivilegedCreators = impl.PrivilegedCreators()
		}
	}
	return ps, nil
}

// EventPositions returns the events-stream positions of the timeline events
// among ids (outliers and unknown IDs are left out). Unread counts compare a
// read receipt's event with notified events by these positions.
func (s *Service) EventPositions(ctx context.Context, ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	for start := 0; start < len(ids); start += 500 {
		batch := ids[start:min(start+500, len(ids))]
		marks, args := storage.InList(batch)
		rows, err := s.db.Query(ctx, `SELECT event_id, stream_pos FROM events WHERE NOT outlier AND event_id IN (`+marks+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("event positions: %w", err)
		}
		for rows.Next() {
			var id string
			var pos int64
			if err := rows.Scan(&id, &pos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("event positions: %w", err)
			}
			out[id] = pos
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("event positions: %w", err)
		}
	}
	return out, nil
}

// PushEvent is an event of the timeline as the push evaluator reads it.
type PushEvent struct {
	JSON     []byte
	OriginTS int64
}

// PushEventOf returns a timeline event's JSON (redacted if it was) by ID.
func (s *Service) PushEventOf(ctx context.Context, eventID string) (PushEvent, error) {
	var raw string
	var ts int64
	err := s.db.QueryRow(ctx, `SELECT json, origin_ts FROM events WHERE event_id = $1`, eventID).Scan(&raw, &ts)
	if errors.Is(err, sql.ErrNoRows) {
		return PushEvent{}, fmt.Errorf("event %s: %w", eventID, ErrNotFound)
	}
	if err != nil {
		return PushEvent{}, fmt.Errorf("event %s: %w", eventID, err)
	}
	return PushEvent{JSON: []byte(raw), OriginTS: ts}, nil
}

// MembershipPositions returns the events-stream position of the user's current
// membership event in each of the rooms (rooms the user has none in are left
// out). Unread counts start no earlier than the user's join.
func (s *Service) MembershipPositions(ctx context.Context, userID string, roomIDs []string) (map[string]int64, error) {
	out := make(map[string]int64, len(roomIDs))
	for start := 0; start < len(roomIDs); start += 500 {
		batch := roomIDs[start:min(start+500, len(roomIDs))]
		marks, args := storage.InList(batch)
		args = append(args, userID)
		rows, err := s.db.Query(ctx, fmt.Sprintf(`SELECT room_id, stream_pos FROM current_state
			WHERE type = 'm.room.member' AND state_key = $%d AND room_id IN (%s)`, len(args), marks), args...)
		if err != nil {
			return nil, fmt.Errorf("membership positions of %s: %w", userID, err)
		}
		for rows.Next() {
			var room string
			var pos int64
			if err := rows.Scan(&room, &pos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("membership positions of %s: %w", userID, err)
			}
			out[room] = pos
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("membership positions of %s: %w", userID, err)
		}
	}
	return out, nil
}
