package clientapi_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

type searchResp struct {
	SearchCategories struct {
		RoomEvents struct {
			Results []struct {
				Rank   float64 `json:"rank"`
				Result struct {
					EventID string         `json:"event_id"`
					RoomID  string         `json:"room_id"`
					Sender  string         `json:"sender"`
					Content map[string]any `json:"content"`
				} `json:"result"`
				Context *struct {
					EventsBefore []struct {
						EventID string `json:"event_id"`
					} `json:"events_before"`
					EventsAfter []struct {
						EventID string `json:"event_id"`
					} `json:"events_after"`
					ProfileInfo map[string]map[string]any `json:"profile_info"`
				} `json:"context"`
			} `json:"results"`
			Count      int                                  `json:"count"`
			Highlights []string                             `json:"highlights"`
			NextBatch  string                               `json:"next_batch"`
			Groups     map[string]map[string]map[string]any `json:"groups"`
			State      map[string][]map[string]any          `json:"state"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

func (r searchResp) ids() []string {
	var out []string
	for _, h := range r.SearchCategories.RoomEvents.Results {
		out = append(out, h.Result.EventID)
	}
	return out
}

// waitIndexed waits until the search indexer has caught up with every event
// committed so far.
func waitIndexed(t *testing.T, srv *testserver.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Search.CaughtUp(ctx); err != nil {
		t.Fatalf("search indexer did not catch up: %v", err)
	}
}

func doSearch(t *testing.T, c *testserver.Client, batch string, body map[string]any) searchResp {
	t.Helper()
	path := "/_matrix/client/v3/search"
	if batch != "" {
		path += "?next_batch=" + url.QueryEscape(batch)
	}
	var out searchResp
	c.MustDo("POST", path, map[string]any{"search_categories": map[string]any{"room_events": body}}, &out)
	return out
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSearchOrderAndPaging: rank order puts the message that says the term most
// first; recent order is newest first; next_batch pages through every hit once;
// the rooms filter, keys, groupings and event_context work.
func TestSearchOrderAndPaging(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "Giraffe house", "topic": "all about giraffes"})
		other := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		weak := sendText(t, alice, room, "t1", "a giraffe and many other animals in the long long text of the zoo")
		filler := sendText(t, alice, room, "t2", "nothing to see here")
		strong := sendText(t, alice, room, "t3", "giraffe giraffe giraffe")
		mid := sendText(t, alice, room, "t4", "giraffe giraffe zoo")
		elsewhere := sendText(t, alice, other, "t5", "a giraffe elsewhere")
		waitIndexed(t, srv)

		rank := doSearch(t, alice, "", map[string]any{"search_term": "giraffe", "keys": []string{"content.body"}})
		re := rank.SearchCategories.RoomEvents
		if got := rank.ids(); len(got) != 4 || got[0] != strong || got[1] != mid {
			t.Fatalf("rank order = %v; want %s, %s first, of 4 (not %s)", got, strong, mid, filler)
		}
		if re.Count != 4 || len(re.Highlights) == 0 || re.Highlights[0] != "giraffe" {
			t.Errorf("count = %d, highlights = %v; want 4 and [giraffe]", re.Count, re.Highlights)
		}
		if re.Results[0].Rank <= re.Results[3].Rank {
			t.Errorf("ranks %v then %v; want descending", re.Results[0].Rank, re.Results[3].Rank)
		}

		recent := doSearch(t, alice, "", map[string]any{"search_term": "giraffe", "order_by": "recent", "keys": []string{"content.body"}})
		if got, want := recent.ids(), []string{elsewhere, mid, strong, weak}; !equalIDs(got, want) {
			t.Errorf("recent order = %v; want %v", got, want)
		}

		// Name and topic are searched too when keys is absent.
		all := doSearch(t, alice, "", map[string]any{"search_term": "giraffes", "filter": map[string]any{"rooms": []string{room}}})
		if n := len(all.ids()); n != 5 {
			t.Errorf("all keys in room = %d hits; want 5 (3 bodies, name, topic)", n)
		}

		for _, order := range []string{"rank", "recent"} {
			seen := map[string]bool{}
			batch := ""
			for page := 0; ; page++ {
				if page > 5 {
					t.Fatalf("%s: paging never ended", order)
				}
				r := doSearch(t, alice, batch, map[string]any{"search_term": "giraffe", "order_by": order, "keys": []string{"content.body"}, "filter": map[string]any{"limit": 2}})
				for _, id := range r.ids() {
					if seen[id] {
						t.Errorf("%s: %s on two pages", order, id)
					}
					seen[id] = true
				}
				batch = r.SearchCategories.RoomEvents.NextBatch
				if batch == "" || len(r.ids()) == 0 {
					break
				}
			}
			if len(seen) != 4 {
				t.Errorf("%s: pages held %d hits; want 4", order, len(seen))
			}
		}

		filtered := doSearch(t, alice, "", map[string]any{"search_term": "giraffe", "keys": []string{"content.body"}, "filter": map[string]any{"rooms": []string{other}},
			"groupings":     map[string]any{"group_by": []map[string]any{{"key": "room_id"}}},
			"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true}, "include_state": true})
		fr := filtered.SearchCategories.RoomEvents
		if got := filtered.ids(); len(got) != 1 || got[0] != elsewhere {
			t.Fatalf("rooms filter = %v; want [%s]", got, elsewhere)
		}
		if fr.Groups["room_id"][other] == nil {
			t.Errorf("groups = %v; want one for %s", fr.Groups, other)
		}
		if len(fr.State[other]) == 0 {
			t.Errorf("include_state gave no state for %s", other)
		}
		cx := fr.Results[0].Context
		if cx == nil || len(cx.EventsBefore) != 1 || len(cx.EventsAfter) != 0 || cx.ProfileInfo[alice.UserID] == nil {
			t.Errorf("event_context = %+v; want one event before, none after, alice's profile", cx)
		}

		ctx := doSearch(t, alice, "", map[string]any{"search_term": "nothing", "filter": map[string]any{"rooms": []string{room}},
			"event_context": map[string]any{"before_limit": 1, "after_limit": 1}})
		if c := ctx.SearchCategories.RoomEvents.Results; len(c) != 1 || c[0].Context == nil ||
			len(c[0].Context.EventsBefore) != 1 || c[0].Context.EventsBefore[0].EventID != weak ||
			len(c[0].Context.EventsAfter) != 1 || c[0].Context.EventsAfter[0].EventID != strong {
			t.Errorf("event_context around %s = %+v; want %s before and %s after", filler, c, weak, strong)
		}
	})
}

// TestSearchRedacted: a redacted message no longer matches.
func TestSearchRedacted(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		gone := sendText(t, alice, room, "t1", "the password is hunter2")
		kept := sendText(t, alice, room, "t2", "hunter2 is a meme")
		waitIndexed(t, srv)
		if got := doSearch(t, alice, "", map[string]any{"search_term": "hunter2"}).ids(); len(got) != 2 {
			t.Fatalf("before redaction: %v; want 2 hits", got)
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(gone)+"/r1", map[string]any{}, nil)
		waitIndexed(t, srv)
		r := doSearch(t, alice, "", map[string]any{"search_term": "hunter2"})
		if got := r.ids(); len(got) != 1 || got[0] != kept {
			t.Errorf("after redaction: %v; want only [%s]", got, kept)
		}
		if r.SearchCategories.RoomEvents.Count != 1 {
			t.Errorf("count after redaction = %d; want 1 (the event left the index)", r.SearchCategories.RoomEvents.Count)
		}
	})
}

// TestSearchBackfilled: history another server sent (live over federation, and
// backfilled from before the searcher's server joined) is searchable there.
func TestSearchBackfilled(t *testing.T) {
	t.Parallel()
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			a := testserver.Start(t, d, testserver.Federated)
			b := testserver.Start(t, d, testserver.Federated)
			alice := a.Register(t, "alice", "pw")
			bob := b.Register(t, "bob", "pw")
			room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
			for i := range 5 {
				sendText(t, alice, room, fmt.Sprintf("h%d", i), fmt.Sprintf("walrus history %d", i))
			}
			bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
			// Paging back on B backfills the history from A.
			bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", nil, nil)
			live := sendText(t, alice, room, "live", "walrus live")
			deadline := time.Now().Add(20 * time.Second)
			var got []string
			for time.Now().Before(deadline) {
				got = doSearch(t, bob, "", map[string]any{"search_term": "walrus", "order_by": "recent"}).ids()
				if len(got) == 6 {
					break
				}
				b.Search.Poke()
				time.Sleep(50 * time.Millisecond) // polling interval, not an assertion
			}
			if len(got) != 6 || got[0] != live {
				t.Errorf("bob's search on B = %v; want the live message first, then 5 backfilled", got)
			}
		})
	}
}
