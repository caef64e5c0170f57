package rooms

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// HierarchyRoom is one room of a space hierarchy.
type HierarchyRoom struct {
	PublicRoom
	ChildrenState []map[string]any `json:"children_state"`
}

// Hierarchy is a page of /hierarchy.
type Hierarchy struct {
	Rooms     []HierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch,omitempty"`
}

// HierarchyQuery is /hierarchy.
type HierarchyQuery struct {
	SuggestedOnly bool
	MaxDepth      int // 0 = unlimited
	Limit         int
	From          string
}

// SpaceHierarchy walks a space breadth-first through its m.space.child events,
// returning the rooms the user may see (joined or invited, world readable, or
// joinable by rule). Remote rooms are skipped until federation exists. From is an
// offset token "h<N>" into the walk.
func (s *Service) SpaceHierarchy(ctx context.Context, roomID, userID string, q HierarchyQuery) (Hierarchy, error) {
	if !s.mayPeek(ctx, roomID, userID) {
		return Hierarchy{}, mxerror.New(mxerror.Forbidden, "you cannot see room %s", roomID)
	}
	skip := 0
	if q.From != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(q.From, "h"))
		if err != nil || !strings.HasPrefix(q.From, "h") || n < 0 {
			return Hierarchy{}, mxerror.New(mxerror.InvalidParam, "invalid from token %q", q.From)
		}
		skip = n
	}
	limit := q.Limit
	if limit <= 0 || limit > 100 {
		limit = 50
	}
	type item struct {
		id    string
		depth int
		via   []string
	}
	queue := []item{{id: roomID}}
	seen := map[string]bool{roomID: true}
	// Summaries of rooms held elsewhere that a remote /hierarchy answer already gave.
	fetched := map[string]HierarchyRoom{}
	res := Hierarchy{Rooms: []HierarchyRoom{}}
	index := 0
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		var hr HierarchyRoom
		var children []spaceChild
		held, err := s.roomExists(ctx, it.id)
		if err != nil {
			return Hierarchy{}, err
		}
		switch {
		case held && s.mayPeek(ctx, it.id, userID) && !(it.id != roomID && s.partialOnly(ctx, it.id)):
			pr, err := s.publicRoom(ctx, it.id)
			if err != nil {
				return Hierarchy{}, err
			}
			hr = HierarchyRoom{PublicRoom: pr, ChildrenState: []map[string]any{}}
			if children, err = s.spaceChildren(ctx, it.id, q.SuggestedOnly); err != nil {
				return Hierarchy{}, err
			}
			for _, c := range children {
				hr.ChildrenState = append(hr.ChildrenState, c.event)
			}
		case held:
			continue
		default:
			// Held only by other servers: ask one the parent named (via).
			got, ok := fetched[it.id]
			if !ok {
				if s.remote == nil || len(it.via) == 0 {
					continue
				}
				room, kids, err := s.remote.Hierarchy(ctx, it.id, it.via, q.SuggestedOnly)
				if err != nil {
					continue // unreachable or private: left out, as Synapse does
				}
				got = room
				for _, k := range kids {
					fetched[k.RoomID] = k
				}
			}
			hr = got
			children = childrenOf(hr, q.SuggestedOnly)
		}
		for _, c := range children {
			if (q.MaxDepth == 0 || it.depth < q.MaxDepth) && !seen[c.roomID] {
				seen[c.roomID] = true
				queue = append(queue, item{c.roomID, it.depth + 1, c.via})
			}
		}
		if index >= skip {
			if len(res.Rooms) == limit {
				res.NextBatch = "h" + strconv.Itoa(index)
				break
			}
			res.Rooms = append(res.Rooms, hr)
		}
		index++
	}
	return res, nil
}

// partialOnly reports whether a room is known here only by an invite or knock
// (no state to summarise it from).
func (s *Service) partialOnly(ctx context.Context, roomID string) bool {
	var n int
	err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.create'`, roomID).Scan(&n)
	return err == nil && n == 0
}

// childrenOf reads the space children out of a summary another server gave.
func childrenOf(hr HierarchyRoom, suggestedOnly bool) []spaceChild {
	var out []spaceChild
	for _, ev := range hr.ChildrenState {
		key, _ := ev["state_key"].(string)
		raw, _ := json.Marshal(ev["content"])
		var c struct {
			Via       []string `json:"via"`
			Suggested bool     `json:"suggested"`
		}
		if key == "" || json.Unmarshal(raw, &c) != nil || len(c.Via) == 0 || (suggestedOnly && !c.Suggested) {
			continue
		}
		out = append(out, spaceChild{roomID: key, via: c.Via, event: ev})
	}
	return out
}

// mayPeek reports whether the user may see a room's summary in a hierarchy.
func (s *Service) mayPeek(ctx context.Context, roomID, userID string) bool {
	if m, err := s.CurrentMembership(ctx, roomID, userID); err == nil && (m == "join" || m == "invite") {
		return true
	}
	pr, err := s.publicRoom(ctx, roomID)
	return err == nil && (pr.JoinRule == "public" || pr.WorldReadable || pr.JoinRule == "knock" || pr.JoinRule == "restricted")
}

type spaceChild struct {
	roomID string
	via    []string
	event  map[string]any
}

// spaceChildren lists a room's m.space.child events that have a via list.
func (s *Service) spaceChildren(ctx context.Context, roomID string, suggestedOnly bool) ([]spaceChild, error) {
	rows, err := s.queryEvents(ctx, `SELECT `+prefixed("e.", eventColumns)+` FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.space.child' ORDER BY c.state_key`, roomID)
	if err != nil {
		return nil, err
	}
	var out []spaceChild
	for _, r := range rows {
		ev := r.clientEvent()
		var c struct {
			Via       []string `json:"via"`
			Suggested bool     `json:"suggested"`
		}
		if json.Unmarshal(ev.Content, &c) != nil || len(c.Via) == 0 || (suggestedOnly && !c.Suggested) {
			continue
		}
		out = append(out, spaceChild{roomID: *ev.StateKey, via: c.Via, event: map[string]any{
			"type": ev.Type, "state_key": *ev.StateKey, "content": ev.Content, "sender": ev.Sender, "origin_server_ts": ev.OriginServerTS}})
	}
	return out, nil
}

// ServerHierarchy answers another server's /hierarchy request for a space here:
// the room with its m.space.child events, and those children this server holds
// that anyone may preview; children it holds that are private are named in
// inaccessible. Children held only elsewhere are for the asking server to find.
func (s *Service) ServerHierarchy(ctx context.Context, roomID string, suggestedOnly bool) (HierarchyRoom, []HierarchyRoom, []string, error) {
	if ok, err := s.roomExists(ctx, roomID); err != nil {
		return HierarchyRoom{}, nil, nil, err
	} else if !ok {
		return HierarchyRoom{}, nil, nil, mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
	}
	if !s.mayPeek(ctx, roomID, "") {
		return HierarchyRoom{}, nil, nil, mxerror.New(mxerror.Forbidden, "room %s cannot be previewed", roomID)
	}
	summary := func(id string) (HierarchyRoom, []spaceChild, error) {
		pr, err := s.publicRoom(ctx, id)
		if err != nil {
			return HierarchyRoom{}, nil, err
		}
		hr := HierarchyRoom{PublicRoom: pr, ChildrenState: []map[string]any{}}
		children, err := s.spaceChildren(ctx, id, suggestedOnly)
		if err != nil {
			return HierarchyRoom{}, nil, err
		}
		for _, c := range children {
			hr.ChildrenState = append(hr.ChildrenState, c.event)
		}
		return hr, children, nil
	}
	room, children, err := summary(roomID)
	if err != nil {
		return HierarchyRoom{}, nil, nil, err
	}
	out, inaccessible := []HierarchyRoom{}, []string{}
	for _, c := range children {
		if ok, err := s.roomExists(ctx, c.roomID); err != nil {
			return HierarchyRoom{}, nil, nil, err
		} else if !ok {
			continue
		}
		if !s.mayPeek(ctx, c.roomID, "") {
			inaccessible = append(inaccessible, c.roomID)
			continue
		}
		hr, _, err := summary(c.roomID)
		if err != nil {
			return HierarchyRoom{}, nil, nil, err
		}
		out = append(out, hr)
	}
	return room, out, inaccessible, nil
}
