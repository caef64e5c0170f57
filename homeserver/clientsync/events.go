package clientsync

import (
	"context"
	"encoding/json"

	"github.com/hongyan/hongyan/homeserver/filter"
)

// EventStream is the answer of the legacy event stream (GET /events, deprecated
// in the spec but still used by older clients and test suites): every event the
// user may see since a token, rooms flattened into one list.
type EventStream struct {
	Start string `json:"start"`
	End   string `json:"end"`
	Chunk []any  `json:"chunk"`
}

// eventStreamLimit bounds the timeline events taken per room in one answer.
const eventStreamLimit = 100

// Events answers the legacy event stream from req.Since (now when nil): it waits
// like an incremental sync, then lists the room events (each with its room_id),
// typing and receipts, invites and presence that arrived after the token.
func (s *Service) Events(ctx context.Context, req Request) (*EventStream, error) {
	if req.Since == nil {
		cur, err := s.current(ctx)
		if err != nil {
			return nil, err
		}
		req.Since = &cur
	}
	since := *req.Since
	limit := eventStreamLimit
	if req.Filter.Room == nil {
		req.Filter.Room = &filter.RoomFilter{}
	}
	req.Filter.Room.Timeline = &filter.RoomEventFilter{EventFilter: filter.EventFilter{Limit: &limit}}
	resp, err := s.Sync(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &EventStream{Start: since.String(), End: resp.NextBatch, Chunk: []any{}}
	out.Chunk = append(out.Chunk, resp.Presence.Events...)
	for roomID, ir := range resp.Rooms.Invite {
		for _, ev := range ir.InviteState.Events {
			if ev["type"] == "m.room.member" && ev["state_key"] == req.UserID {
				withRoom := map[string]any{"room_id": roomID}
				for k, v := range ev {
					withRoom[k] = v
				}
				out.Chunk = append(out.Chunk, withRoom)
			}
		}
	}
	addTimeline := func(roomID string, tl Timeline) {
		for _, ev := range tl.Events {
			// A room joined since the token comes with history from before it:
			// the stream has only what happened after the token.
			if ev.StreamPos > since.Events {
				ev.RoomID = roomID
				out.Chunk = append(out.Chunk, ev)
			}
		}
	}
	for roomID, jr := range resp.Rooms.Join {
		addTimeline(roomID, jr.Timeline)
		for _, e := range jr.Ephemeral.Events {
			out.Chunk = append(out.Chunk, withRoomID(e, roomID))
		}
	}
	for roomID, lr := range resp.Rooms.Leave {
		addTimeline(roomID, lr.Timeline)
	}
	return out, nil
}

// withRoomID adds room_id to an ephemeral event (sync leaves it out, as the room
// is the key; the flat stream needs it).
func withRoomID(e any, roomID string) any {
	raw, err := json.Marshal(e)
	if err != nil {
		return e
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return e
	}
	m["room_id"] = roomID
	return m
}
