package rooms

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// PublicRoom is one entry of the public room directory.
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRooms is a page of the directory.
type PublicRooms struct {
	Chunk     []PublicRoom `json:"chunk"`
	NextBatch string       `json:"next_batch,omitempty"`
	PrevBatch string       `json:"prev_batch,omitempty"`
	Total     int          `json:"total_room_count_estimate"`
}

// PublicRoomList lists published rooms, most joined members first, filtered by a
// search term on name, topic and alias, paged by an offset token "o<N>".
func (s *Service) PublicRoomList(ctx context.Context, search string, limit int, since string) (PublicRooms, error) {
	offset := 0
	if since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(since, "o"))
		if err != nil || !strings.HasPrefix(since, "o") || n < 0 {
			return PublicRooms{}, mxerror.New(mxerror.InvalidParam, "invalid since token %q", since)
		}
		offset = n
	}
	rows, err := s.db.Query(ctx, `SELECT room_id FROM rooms WHERE visibility = 'public'`)
	if err != nil {
		return PublicRooms{}, fmt.Errorf("public rooms: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return PublicRooms{}, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	search = strings.ToLower(search)
	var all []PublicRoom
	for _, id := range ids {
		pr, err := s.publicRoom(ctx, id)
		if err != nil {
			return PublicRooms{}, err
		}
		if search != "" && !strings.Contains(strings.ToLower(pr.Name+" "+pr.Topic+" "+pr.CanonicalAlias), search) {
			continue
		}
		all = append(all, pr)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].NumJoinedMembers != all[j].NumJoinedMembers {
			return all[i].NumJoinedMembers > all[j].NumJoinedMembers
		}
		return all[i].RoomID < all[j].RoomID
	})
	out := PublicRooms{Chunk: []PublicRoom{}, Total: len(all)}
	if limit <= 0 || limit > 500 {
		limit = 500
	}
	if offset > len(all) {
		offset = len(all)
	}
	end := min(offset+limit, len(all))
	out.Chunk = append(out.Chunk, all[offset:end]...)
	if end < len(all) {
		out.NextBatch = "o" + strconv.Itoa(end)
	}
	if offset > 0 {
		out.PrevBatch = "o" + strconv.Itoa(max(0, offset-limit))
	}
	return out, nil
}

func (s *Service) publicRoom(ctx context.Context, roomID string) (PublicRoom, error) {
	pr := PublicRoom{RoomID: roomID}
	rows, err := s.db.Query(ctx, `SELECT c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.state_key = '' AND c.type IN ('m.room.name', 'm.room.topic', 'm.room.canonical_alias',
		'm.room.avatar', 'm.room.history_visibility', 'm.room.guest_access', 'm.room.join_rules', 'm.room.create')`, roomID)
	if err != nil {
		return pr, fmt.Errorf("public room %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ, raw string
		if err := rows.Scan(&typ, &raw); err != nil {
			return pr, err
		}
		c := gjson.Get(raw, "content")
		switch typ {
		case "m.room.name":
			pr.Name = c.Get("name").String()
		case "m.room.topic":
			pr.Topic = c.Get("topic").String()
		case "m.room.canonical_alias":
			pr.CanonicalAlias = c.Get("alias").String()
		case "m.room.avatar":
			pr.AvatarURL = c.Get("url").String()
		case "m.room.history_visibility":
			pr.WorldReadable = c.Get("history_visibility").String() == "world_readable"
		case "m.room.guest_access":
			pr.GuestCanJoin = c.Get("guest_access").String() == "can_join"
		case "m.room.join_rules":
			pr.JoinRule = c.Get("join_rule").String()
		case "m.room.create":
			pr.RoomType = c.Get("type").String()
		}
	}
	if err := rows.Err(); err != nil {
		return pr, err
	}
	err = s.db.QueryRow(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`,
		roomID).Scan(&pr.NumJoinedMembers)
	return pr, err
}

// Context is /context: an event with the events around it.
type Context struct {
	Start        string        `json:"start"`
	End          string        `json:"end"`
	EventsBefore []ClientEvent `json:"events_before"`
	Event        ClientEvent   `json:"event"`
	EventsAfter  []ClientEvent `json:"events_after"`
	State        []ClientEvent `json:"state"`
}

// EventContext returns up to limit events around eventID that the user may see.
func (s *Service) EventContext(ctx context.Context, roomID, userID, eventID string, limit int, f MessagesQuery) (Context, error) {
	// Who may page the room may ask for context: a stranger to a room that is not
	// world-readable is refused (403) before any event is looked up.
	if err := s.checkCanPage(ctx, roomID, userID); err != nil {
		return Context{}, err
	}
	ev, err := s.Event(ctx, roomID, userID, eventID)
	if err != nil {
		return Context{}, err
	}
	if limit <= 0 {
		limit = 10
	}
	before := limit / 2
	after := limit - before
	res := Context{Event: ev, EventsBefore: []ClientEvent{}, EventsAfter: []ClientEvent{}}
	if before > 0 {
		page, err := s.Messages(ctx, roomID, userID, MessagesQuery{From: Token(ev.StreamPos - 1), Backward: true, Limit: before, Filter: f.Filter})
		if err != nil {
			return Context{}, err
		}
		res.EventsBefore = page.Chunk
	}
	res.Start = Token(ev.StreamPos - 1)
	if n := len(res.EventsBefore); n > 0 {
		res.Start = Token(res.EventsBefore[n-1].StreamPos - 1)
	}
	page, err := s.Messages(ctx, roomID, userID, MessagesQuery{From: Token(ev.StreamPos), Limit: after, Filter: f.Filter})
	if err != nil {
		return Context{}, err
	}
	res.EventsAfter = page.Chunk
	res.End = Token(ev.StreamPos)
	if n := len(res.EventsAfter); n > 0 {
		res.End = Token(res.EventsAfter[n-1].StreamPos)
	}
	end, _ := ParseToken(res.End)
	if res.State, err = s.StateAt(ctx, roomID, end); err != nil {
		return Context{}, err
	}
	if f.Filter != nil && f.Filter.LazyLoadMembers {
		all := append(append(append([]ClientEvent{}, res.EventsBefore...), ev), res.EventsAfter...)
		if res.State, err = s.memberEventsFor(ctx, roomID, all); err != nil {
			return Context{}, err
		}
	}
	return res, nil
}

// RelationsQuery is /relations.
type RelationsQuery struct {
	RelType, EventType string
	From, To           string
	Backward           bool
	Limit              int
}

// Relations is a page of events relating to one event.
type Relations struct {
	Chunk     []ClientEvent `json:"chunk"`
	NextBatch string        `json:"next_batch,omitempty"`
	PrevBatch string        `json:"prev_batch,omitempty"`
}

// RelationsOf pages through the events that relate to eventID.
func (s *Service) RelationsOf(ctx context.Context, roomID, userID, eventID string, q RelationsQuery) (Relations, error) {
	if _, err := s.Event(ctx, roomID, userID, eventID); err != nil {
		return Relations{}, err
	}
	limit := q.Limit
	if limit <= 0 || limit > maxMessagesLimit {
		limit = 50
	}
	cursor := int64(1<<62 - 1)
	if !q.Backward {
		cursor = 0
	}
	if q.From != "" {
		var err error
		if cursor, err = ParseToken(q.From); err != nil {
			return Relations{}, err
		}
	}
	bound := int64(-1)
	if q.To != "" {
		var err error
		if bound, err = ParseToken(q.To); err != nil {
			return Relations{}, err
		}
	}
	cond := `room_id = $1 AND relates_to = $2 AND ($3 = '' OR rel_type = $3) AND ($4 = '' OR type = $4)`
	var rows []eventRow
	var err error
	if q.Backward {
		rows, err = s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE `+cond+` AND stream_pos <= $5 AND stream_pos > $6
			ORDER BY stream_pos DESC LIMIT $7`, roomID, eventID, q.RelType, q.EventType, cursor, bound, limit+1)
	} else {
		upper := int64(1<<62 - 1)
		if bound >= 0 {
			upper = bound
		}
		rows, err = s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE `+cond+` AND stream_pos > $5 AND stream_pos <= $6
			ORDER BY stream_pos LIMIT $7`, roomID, eventID, q.RelType, q.EventType, cursor, upper, limit+1)
	}
	if err != nil {
		return Relations{}, err
	}
	v, err := s.newVisibility(ctx, roomID, User(userID))
	if err != nil {
		return Relations{}, err
	}
	res := Relations{Chunk: []ClientEvent{}}
	if err := v.loadErased(ctx, rows); err != nil {
		return Relations{}, err
	}
	for i, r := range rows {
		if i == limit {
			if q.Backward {
				res.NextBatch = Token(rows[i-1].pos - 1)
			} else {
				res.NextBatch = Token(rows[i-1].pos)
			}
			break
		}
		r, ok, err := v.show(ctx, r)
		if err != nil {
			return Relations{}, err
		}
		if ok {
			res.Chunk = append(res.Chunk, r.clientEvent())
		}
	}
	res.PrevBatch = q.From
	return res, nil
}

// Report records a user's report of an event (or, with eventID "", of the room).
func (s *Service) Report(ctx context.Context, roomID, userID, eventID, reason string, score *int64) error {
	if eventID != "" {
		if _, err := s.Event(ctx, roomID, userID, eventID); err != nil {
			return err
		}
	} else if m, err := s.CurrentMembership(ctx, roomID, userID); err != nil {
		return err
	} else if m == "" {
		if ok, err := s.roomExists(ctx, roomID); err != nil || !ok {
			return mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
		}
	}
	if score != nil && (*score < -100 || *score > 0) {
		return mxerror.New(mxerror.InvalidParam, "score must be between -100 and 0")
	}
	var id int64
	if err := s.db.NextStreamPos(ctx, "event_reports", &id); err != nil {
		return fmt.Errorf("report id: %w", err)
	}
	_, err := s.db.Exec(ctx, `INSERT INTO event_reports (id, room_id, event_id, user_id, reason, score, received_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		id, roomID, eventID, userID, reason, score, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("store report: %w", err)
	}
	return nil
}

// EventAtTime finds the event closest to ts in the direction given that the user
// may see.
func (s *Service) EventAtTime(ctx context.Context, roomID, userID string, ts int64, forward bool) (string, int64, error) {
	return s.eventAtTimeFor(ctx, roomID, User(userID), ts, forward)
}

// EventAtTimeForServer answers /timestamp_to_event for a server: the closest event
// its users' history visibility lets it see.
func (s *Service) EventAtTimeForServer(ctx context.Context, roomID, server string, ts int64, forward bool) (string, int64, error) {
	return s.eventAtTimeFor(ctx, roomID, Server(server), ts, forward)
}

func (s *Service) eventAtTimeFor(ctx context.Context, roomID string, r Reader, ts int64, forward bool) (string, int64, error) {
	v, err := s.newVisibility(ctx, roomID, r)
	if err != nil {
		return "", 0, err
	}
	return s.eventAtTime(ctx, roomID, ts, forward, func(r eventRow) (bool, error) { return v.canSee(ctx, r) })
}

func (s *Service) eventAtTime(ctx context.Context, roomID string, ts int64, forward bool, canSee func(eventRow) (bool, error)) (string, int64, error) {
	q := `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND origin_ts <= $2 AND NOT outlier ORDER BY origin_ts DESC, stream_pos DESC LIMIT 50`
	if forward {
		q = `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND origin_ts >= $2 AND NOT outlier ORDER BY origin_ts, stream_pos LIMIT 50`
	}
	rows, err := s.queryEvents(ctx, q, roomID, ts)
	if err != nil {
		return "", 0, err
	}
	for _, r := range rows {
		if ok, err := canSee(r); err != nil {
			return "", 0, err
		} else if ok {
			return r.eventID, r.originTS, nil
		}
	}
	return "", 0, mxerror.New(mxerror.NotFound, "no event found")
}
