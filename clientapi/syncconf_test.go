package clientapi_test

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestSyncHeroesOnlyForUnnamedRooms: the summary's m.heroes are for rooms a client
// must name from their members: present while the room has no name and no canonical
// alias (an empty name counts as none), absent once it has either.
func TestSyncHeroesOnlyForUnnamedRooms(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		for _, tc := range []struct {
			name       string
			state      map[string]map[string]any // type -> content
			wantHeroes bool
		}{
			{"no name", nil, true},
			{"empty name", map[string]map[string]any{"m.room.name": {"name": ""}}, true},
			{"named", map[string]map[string]any{"m.room.name": {"name": "Named"}}, false},
			{"canonical alias", map[string]map[string]any{"m.room.canonical_alias": {"alias": "#heroes-" + "x:localhost"}}, false},
		} {
			roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
			if tc.name == "canonical alias" {
				alice.MustDo("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#heroes-x:localhost"), map[string]string{"room_id": roomID}, nil)
			}
			bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
			for typ, content := range tc.state {
				alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/"+typ+"/", content, nil)
			}
			sum := doSync(t, alice, "").Rooms.Join[roomID].Summary
			if _, has := sum["m.heroes"]; has != tc.wantHeroes {
				t.Errorf("%s: summary %v; want m.heroes present %v", tc.name, sum, tc.wantHeroes)
			}
			if sum["m.joined_member_count"] != float64(2) {
				t.Errorf("%s: summary %v; want 2 joined", tc.name, sum)
			}
		}
	})
}

// presenceDelta is the part of a /sync response the presence tests read.
type presenceDelta struct {
	NextBatch string `json:"next_batch"`
	Presence  struct {
		Events []struct {
			Type    string         `json:"type"`
			Sender  string         `json:"sender"`
			Content map[string]any `json:"content"`
		} `json:"events"`
	} `json:"presence"`
}

func (p presenceDelta) senders() []string {
	var out []string
	for _, ev := range p.Presence.Events {
		if ev.Type == "m.presence" {
			out = append(out, ev.Sender)
		}
	}
	return out
}

// TestSyncPresenceOfNewlySharedUsers: when two users come to share a room, each
// one's next incremental sync carries the other's presence, changed since the token
// or not, offline for a user never seen (the client never had it), and the sync
// after that does not repeat it.
func TestSyncPresenceOfNewlySharedUsers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		// Neither has any presence recorded (they sync as offline): what the
		// other gets is the default, offline, and still gets it.
		var as, bs presenceDelta
		alice.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline", nil, &as)
		bob.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline", nil, &bs)

		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		for _, tc := range []struct {
			who   *testserver.Client
			since *presenceDelta
			other string
		}{{bob, &bs, alice.UserID}, {alice, &as, bob.UserID}} {
			var got presenceDelta
			tc.who.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline&timeout=0&since="+tc.since.NextBatch, nil, &got)
			if !slices.Contains(got.senders(), tc.other) {
				t.Errorf("%s's sync after bob joined: presence from %v; want %s", tc.who, got.senders(), tc.other)
			}
			var again presenceDelta
			tc.who.MustDo("GET", "/_matrix/client/v3/sync?set_presence=offline&timeout=0&since="+got.NextBatch, nil, &again)
			if slices.Contains(again.senders(), tc.other) {
				t.Errorf("%s's sync after that: presence from %v; want %s no more", tc.who, again.senders(), tc.other)
			}
		}
	})
}

// TestSyncNewlyJoinedRoomLimited: a room joined since the token comes in an
// incremental sync with a limited timeline and a prev_batch, however few events it
// has: the client holds none of its history and must page back for more.
func TestSyncNewlyJoinedRoomLimited(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		sendText(t, alice, roomID, "1", "before bob")
		since := doSync(t, bob, "").NextBatch
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		room, ok := doSync(t, bob, "timeout=0&since="+since).Rooms.Join[roomID]
		if !ok {
			t.Fatal("bob's incremental sync lacks the room he joined")
		}
		if !room.Timeline.Limited || room.Timeline.PrevBatch == "" {
			t.Errorf("newly joined room: timeline limited %v, prev_batch %q; want limited with a prev_batch", room.Timeline.Limited, room.Timeline.PrevBatch)
		}

		// The next message comes with an empty state list, not a null one.
		since = doSync(t, bob, "timeout=0&since="+since).NextBatch
		sendText(t, alice, roomID, "2", "after bob")
		_, raw := bob.Raw("GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(`{"room":{"state":{"types":[]}}}`)+"&since="+since, nil)
		if !strings.Contains(string(raw), `"state":{"events":[]}`) {
			t.Errorf("incremental sync with no state = %s; want state.events []", raw)
		}
	})
}

// members is the membership of each member event in a sync's room state.
func members(state []event) map[string]string {
	out := map[string]string{}
	for _, ev := range state {
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			m, _ := ev.Content["membership"].(string)
			out[*ev.StateKey] = m
		}
	}
	return out
}

// TestSyncLazyMembersAcrossGaps: a lazy-loading client's incremental syncs carry
// the members it needs and has not been sent: those of the timeline's senders, and
// every membership change in a gap (a join or leave of someone who never spoke);
// never a member the device was already sent, unless include_redundant_members asks;
// and a retried sync from an older token is sent them again.
func TestSyncLazyMembersAcrossGaps(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		charlie := srv.Register(t, "charlie", "pw")
		dave := srv.Register(t, "dave", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		for _, u := range []*testserver.Client{bob, charlie} {
			u.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		}
		lazy := "filter=" + url.QueryEscape(`{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":3}}}`)
		redundant := "filter=" + url.QueryEscape(`{"room":{"state":{"lazy_load_members":true,"include_redundant_members":true},"timeline":{"limit":3}}}`)
		say := func(c *testserver.Client, n int) {
			for i := range n {
				sendText(t, c, roomID, fmt.Sprintf("%s-%d-%d", c.Device, time.Now().UnixNano(), i), "hi")
			}
		}
		check := func(step string, s syncResp, want map[string]string) {
			t.Helper()
			room := s.Rooms.Join[roomID]
			if got := members(room.State.Events); !maps.Equal(got, want) {
				t.Errorf("%s: state members = %v; want %v", step, got, want)
			}
		}

		say(bob, 3)
		first := doSync(t, alice, lazy)
		check("initial sync", first, map[string]string{alice.UserID: "join", bob.UserID: "join"})

		// Dave joins and stays silent, charlie speaks: a gap.
		dave.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		say(charlie, 3)
		second := doSync(t, alice, lazy+"&timeout=0&since="+first.NextBatch)
		if !second.Rooms.Join[roomID].Timeline.Limited {
			t.Fatal("second sync: timeline not limited; the test needs a gap")
		}
		want := map[string]string{charlie.UserID: "join", dave.UserID: "join"}
		check("gappy sync", second, want)
		check("the same sync retried", doSync(t, alice, lazy+"&timeout=0&since="+first.NextBatch), want)

		// No gap: bob and charlie speak; alice holds both members already.
		say(bob, 1)
		say(charlie, 1)
		third := doSync(t, alice, lazy+"&timeout=0&since="+second.NextBatch)
		check("sync without a gap", third, map[string]string{})
		check("sync without a gap, redundant members asked for", doSync(t, alice, redundant+"&timeout=0&since="+second.NextBatch),
			map[string]string{bob.UserID: "join", charlie.UserID: "join"})

		// Dave leaves in a gap: his leave comes, the speaker's member does not.
		dave.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)
		say(bob, 3)
		check("gappy sync over a leave", doSync(t, alice, lazy+"&timeout=0&since="+third.NextBatch), map[string]string{dave.UserID: "leave"})
	})
}

// TestSyncDisplaynameChangeIsNoRejoin: a joined user's new member event (a new
// displayname) comes in the next incremental sync as one timeline event, like any
// state change; the room is not sent afresh as if newly joined (full timeline,
// whole state).
func TestSyncDisplaynameChangeIsNoRejoin(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		since := doSync(t, alice, "").NextBatch
		var put map[string]string
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.member/"+url.PathEscape(alice.UserID),
			map[string]string{"membership": "join", "displayname": "boris"}, &put)
		msg := sendText(t, alice, roomID, "1", "after")
		room := doSync(t, alice, "timeout=0&since="+since).Rooms.Join[roomID]
		var ids []string
		for _, ev := range room.Timeline.Events {
			ids = append(ids, ev.EventID)
		}
		if !slices.Equal(ids, []string{put["event_id"], msg}) || room.Timeline.Limited || len(room.State.Events) != 0 {
			t.Errorf("sync after a displayname change: timeline %v (limited %v), %d state events; want [%s %s], not limited, no state",
				ids, room.Timeline.Limited, len(room.State.Events), put["event_id"], msg)
		}
	})
}

// TestSyncFilteredTimelineLimited: a timeline filtered by type is limited only when
// an earlier matching event exists, not whenever the limit is reached; and /messages
// paging forward to the live end gives an end token to go on from.
func TestSyncFilteredTimelineLimited(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		first := sendText(t, alice, roomID, "1", "only message")
		for i := range 5 {
			alice.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/a.filler/f%d", roomID, i), map[string]any{"n": i}, nil)
		}
		for _, tc := range []struct {
			name        string
			limit       int
			wantEvents  int
			wantLimited bool
		}{
			{"limit 1, one message", 1, 1, false},
			{"limit 5, one message", 5, 1, false},
		} {
			f := url.QueryEscape(fmt.Sprintf(`{"room":{"timeline":{"types":["m.room.message"],"limit":%d},"state":{"types":[]}}}`, tc.limit))
			room := doSync(t, alice, "filter="+f).Rooms.Join[roomID]
			if len(room.Timeline.Events) != tc.wantEvents || room.Timeline.Limited != tc.wantLimited || room.Timeline.Events[0].EventID != first {
				t.Errorf("%s: %d events (limited %v); want %d (limited %v)", tc.name, len(room.Timeline.Events), room.Timeline.Limited, tc.wantEvents, tc.wantLimited)
			}
		}
		second := sendText(t, alice, roomID, "2", "second message")
		f := url.QueryEscape(`{"room":{"timeline":{"types":["m.room.message"],"limit":1}}}`)
		if room := doSync(t, alice, "filter="+f).Rooms.Join[roomID]; !room.Timeline.Limited || room.Timeline.Events[0].EventID != second {
			t.Errorf("limit 1, two messages: limited %v, first %v; want limited, the second message", room.Timeline.Limited, room.Timeline.Events)
		}

		next := doSync(t, alice, "").NextBatch
		third := sendText(t, alice, roomID, "3", "third")
		// A room whose new events all fall to the filter is left out.
		none := url.QueryEscape(`{"room":{"timeline":{"types":[]},"state":{"types":["a.none"]}}}`)
		if s := doSync(t, alice, "timeout=0&filter="+none+"&since="+next); len(s.Rooms.Join) != 0 {
			t.Errorf("incremental sync whose events the filter drops: rooms.join = %v; want none", s.Rooms.Join)
		}
		var page struct {
			Chunk []event `json:"chunk"`
			End   string  `json:"end"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=f&from="+next, nil, &page)
		if len(page.Chunk) != 1 || page.Chunk[0].EventID != third || page.End == "" {
			t.Fatalf("/messages forward from next_batch = %d events, end %q; want the third message and an end", len(page.Chunk), page.End)
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=f&from="+page.End, nil, &page)
		if len(page.Chunk) != 0 || page.End == "" {
			t.Errorf("/messages forward from the live end = %d events, end %q; want none and an end", len(page.Chunk), page.End)
		}
	})
}

// TestSyncCurrentStateSeenOnRejoin: in a room with joined history visibility, a
// member who leaves and rejoins gets in the rejoin's timeline the joins that
// happened while away, since they are current state (readable by a member anyway),
// but no message sent while away.
func TestSyncCurrentStateSeenOnRejoin(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		creator := srv.Register(t, "creator", "pw")
		syncer := srv.Register(t, "syncer", "pw")
		invitee := srv.Register(t, "invitee", "pw")
		roomID := createRoom(t, creator, map[string]any{"preset": "public_chat"})
		syncer.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		creator.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.history_visibility/", map[string]string{"history_visibility": "joined"}, nil)
		since := doSync(t, syncer, "").NextBatch
		syncer.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)
		var joined map[string]string
		invitee.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, &joined)
		secret := sendText(t, creator, roomID, "away", "while syncer is away")
		syncer.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)

		room := doSync(t, syncer, "timeout=0&since="+since).Rooms.Join[roomID]
		sawJoin := false
		for _, ev := range append(room.Timeline.Events, room.State.Events...) {
			if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == invitee.UserID && ev.Content["membership"] == "join" {
				sawJoin = true
			}
			if ev.EventID == secret {
				t.Errorf("rejoined member sees a message sent while away: %v", ev.Content)
			}
		}
		if !sawJoin {
			t.Errorf("rejoined member's sync lacks invitee's join: timeline %d events, state %d", len(room.Timeline.Events), len(room.State.Events))
		}
	})
}

// TestSyncLeftRoomJoinedSinceHasState: a room the user joined and left between two
// syncs comes under leave with its state (filtered as asked): the client never had
// it.
func TestSyncLeftRoomJoinedSinceHasState(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/a.test.state/", map[string]int{"my_key": 1}, nil)
		f := "filter=" + url.QueryEscape(`{"room":{"timeline":{"types":[]},"state":{"types":["a.test.state"]},"include_leave":true}}`)
		since := doSync(t, bob, f).NextBatch
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)
		var s struct {
			Rooms struct {
				Leave map[string]struct {
					State struct{ Events []event } `json:"state"`
				} `json:"leave"`
			} `json:"rooms"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&"+f+"&since="+since, nil, &s)
		left, ok := s.Rooms.Leave[roomID]
		if !ok || len(left.State.Events) != 1 || left.State.Events[0].Type != "a.test.state" {
			t.Errorf("left room after joining and leaving since the token: present %v, state %+v; want the one a.test.state event", ok, left.State.Events)
		}
	})
}
