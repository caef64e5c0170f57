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
	}
	queue := []item{{roomID, 0}}
	seen := map[string]bool{roomID: true}
	res := Hierarchy{Rooms: []HierarchyRoom{}}
	index := 0
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if ok, err := s.roomExists(ctx, it.id); err != nil {
			return Hierarchy{}, err
		} else if !ok || !s.mayPeek(ctx, it.id, userID) {
			continue
		}
		pr, err := s.publicRoom(ctx, it.id)
		if err != nil {
			return Hierarchy{}, err
		}
		hr := HierarchyRoom{PublicRoom: pr, ChildrenState: []map[string]any{}}
		children, err := s.spaceChildren(ctx, it.id, q.SuggestedOnly)
		if err != nil {
			return Hierarchy{}, err
		}
		for _, c := range children {
			hr.ChildrenState = append(hr.ChildrenState, c.event)
			if (q.MaxDepth == 0 || it.depth < q.MaxDepth) && !seen[c.roomID] {
				seen[c.roomID] = true
				queue = append(queue, item{c.roomID, it.depth + 1})
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
		out = append(out, spaceChild{roomID: *ev.StateKey, event: map[string]any{
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
