package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/search"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerSearch(v3 *mux.Router, api *httpapi.API) {
	if h.search == nil {
		return
	}
	api.Handle(v3, http.MethodPost, "/search", h.searchRoomEvents, httpapi.Authed, httpapi.RateLimited)
}

type searchRequest struct {
	SearchCategories map[string]json.RawMessage `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm *string  `json:"search_term"`
	Keys       []string `json:"keys"`
	Filter     struct {
		Rooms      *[]string `json:"rooms"`
		NotRooms   []string  `json:"not_rooms"`
		Senders    []string  `json:"senders"`
		NotSenders []string  `json:"not_senders"`
		Limit      int       `json:"limit"`
	} `json:"filter"`
	OrderBy      string `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

type searchResult struct {
	Rank    float64             `json:"rank"`
	Result  rooms.ClientEvent   `json:"result"`
	Context *searchEventContext `json:"context,omitempty"`
}

type searchEventContext struct {
	Start        string                    `json:"start,omitempty"`
	End          string                    `json:"end,omitempty"`
	EventsBefore []rooms.ClientEvent       `json:"events_before"`
	EventsAfter  []rooms.ClientEvent       `json:"events_after"`
	ProfileInfo  map[string]map[string]any `json:"profile_info,omitempty"`
}

type searchGroup struct {
	Results   []string `json:"results"`
	Order     int      `json:"order"`
	NextBatch string   `json:"next_batch,omitempty"`
}

// searchRoomEvents is POST /search: the room_events category (the only one the
// spec defines). The search itself, and its visibility rules, are
// homeserver/search's; this only translates.
func (h *handlers) searchRoomEvents(r *httpapi.Request) (any, error) {
	var req searchRequest
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	raw, ok := req.SearchCategories["room_events"]
	if !ok {
		// Synapse answers a body without room_events the same way.
		return nil, mxerror.New(mxerror.Unknown, "invalid search query: no room_events category")
	}
	var c roomEventsCriteria
	if err := httpapi.DecodeJSON(raw, &c); err != nil {
		return nil, err
	}
	if c.SearchTerm == nil {
		return nil, mxerror.New(mxerror.BadJSON, "search_term is required")
	}
	recent := false
	switch c.OrderBy {
	case "", "rank":
	case "recent":
		recent = true
	default:
		return nil, mxerror.New(mxerror.InvalidParam, "order_by must be rank or recent")
	}
	if c.Filter.Limit < 0 {
		return nil, mxerror.New(mxerror.InvalidParam, "filter.limit must not be negative")
	}
	q := search.Query{
		UserID: r.Caller.UserID, Term: *c.SearchTerm, Keys: c.Keys,
		NotRooms: c.Filter.NotRooms, Senders: c.Filter.Senders, NotSenders: c.Filter.NotSenders,
		Limit: c.Filter.Limit, Recent: recent, Batch: r.URL.Query().Get("next_batch"),
	}
	if c.Filter.Rooms != nil {
		q.Rooms = *c.Filter.Rooms
		if q.Rooms == nil {
			q.Rooms = []string{}
		}
	}
	ctx := r.Context()
	res, err := h.search.Search(ctx, q)
	if err != nil {
		return nil, err
	}
	results := make([]searchResult, 0, len(res.Hits))
	groups := map[string]map[string]*searchGroup{}
	for _, g := range c.Groupings.GroupBy {
		if g.Key != "room_id" && g.Key != "sender" {
			return nil, mxerror.New(mxerror.InvalidParam, "group_by key must be room_id or sender")
		}
		groups[g.Key] = map[string]*searchGroup{}
	}
	var state map[string][]rooms.ClientEvent
	if c.IncludeState {
		state = map[string][]rooms.ClientEvent{}
	}
	for _, hit := range res.Hits {
		ev := hit.Event
		sr := searchResult{Rank: hit.Rank, Result: ev}
		if ec := c.EventContext; ec != nil {
			before, after := 5, 5
			if ec.BeforeLimit != nil {
				before = max(*ec.BeforeLimit, 0)
			}
			if ec.AfterLimit != nil {
				after = max(*ec.AfterLimit, 0)
			}
			sc, err := h.searchContext(r, ev, before, after, ec.IncludeProfile)
			if err != nil {
				return nil, err
			}
			sr.Context = sc
		}
		results = append(results, sr)
		for key, byKey := range groups {
			k := ev.RoomID
			if key == "sender" {
				k = ev.Sender
			}
			g := byKey[k]
			if g == nil {
				g = &searchGroup{Order: len(byKey) + 1}
				byKey[k] = g
			}
			g.Results = append(g.Results, ev.EventID)
		}
		if state != nil {
			if _, done := state[ev.RoomID]; !done {
				st, err := h.rooms.State(ctx, ev.RoomID, r.Caller.UserID)
				if err != nil {
					var me *mxerror.Error
					if !errors.As(err, &me) {
						return nil, err
					}
				}
				state[ev.RoomID] = st
			}
		}
	}
	out := map[string]any{"results": results, "count": res.Count, "highlights": res.Highlights}
	if res.NextBatch != "" {
		out["next_batch"] = res.NextBatch
	}
	if len(groups) > 0 {
		out["groups"] = groups
	}
	if state != nil {
		out["state"] = state
	}
	return map[string]any{"search_categories": map[string]any{"room_events": out}}, nil
}

// searchContext is a hit's event_context: the events around it the caller may
// see (through /context's reader) and, if asked, their senders' profiles.
func (h *handlers) searchContext(r *httpapi.Request, ev rooms.ClientEvent, before, after int, profile bool) (*searchEventContext, error) {
	sc := &searchEventContext{EventsBefore: []rooms.ClientEvent{}, EventsAfter: []rooms.ClientEvent{}}
	if before > 0 || after > 0 {
		cx, err := h.rooms.EventContext(r.Context(), ev.RoomID, r.Caller.UserID, ev.EventID, 2*max(before, after), rooms.MessagesQuery{})
		if err != nil {
			return nil, err
		}
		sc.Start, sc.End = cx.Start, cx.End
		sc.EventsBefore = cx.EventsBefore[:min(before, len(cx.EventsBefore))]
		sc.EventsAfter = cx.EventsAfter[:min(after, len(cx.EventsAfter))]
	}
	if profile {
		sc.ProfileInfo = map[string]map[string]any{}
		senders := []string{ev.Sender}
		for _, e := range append(append([]rooms.ClientEvent{}, sc.EventsBefore...), sc.EventsAfter...) {
			senders = append(senders, e.Sender)
		}
		for _, u := range senders {
			if _, done := sc.ProfileInfo[u]; done {
				continue
			}
			p := map[string]any{}
			if m, err := h.rooms.StateEvent(r.Context(), ev.RoomID, r.Caller.UserID, "m.room.member", u); err == nil {
				var content map[string]any
				if json.Unmarshal(m.Content, &content) == nil {
					for _, k := range []string{"displayname", "avatar_url"} {
						if v, ok := content[k]; ok {
							p[k] = v
						}
					}
				}
			}
			sc.ProfileInfo[u] = p
		}
	}
	return sc, nil
}
