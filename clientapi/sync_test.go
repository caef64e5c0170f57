package clientapi_test

import (
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

type syncResp struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []event `json:"events"`
	} `json:"account_data"`
	Rooms struct {
		Join map[string]struct {
			State    struct{ Events []event } `json:"state"`
			Timeline struct {
				Events    []event `json:"events"`
				Limited   bool    `json:"limited"`
				PrevBatch string  `json:"prev_batch"`
			} `json:"timeline"`
			Summary map[string]any `json:"summary"`
		} `json:"join"`
		Invite map[string]struct {
			InviteState struct{ Events []event } `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]struct {
			Timeline struct{ Events []event } `json:"timeline"`
		} `json:"leave"`
	} `json:"rooms"`
}

func doSync(t *testing.T, c *testserver.Client, query string) syncResp {
	t.Helper()
	var s syncResp
	c.MustDo("GET", "/_matrix/client/v3/sync?"+query, nil, &s)
	return s
}

func TestSyncInitialAndIncremental(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Sync"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		sendText(t, alice, roomID, "1", "one")
		bob.MustDo("PUT", "/_matrix/client/v3/user/@bob:localhost/account_data/im.test", map[string]int{"n": 1}, nil)

		first := doSync(t, bob, "")
		room, ok := first.Rooms.Join[roomID]
		if !ok {
			t.Fatalf("initial sync lacks the joined room: %+v", first.Rooms)
		}
		if got := bodies(room.Timeline.Events); len(got) != 1 || got[0] != "one" {
			t.Errorf("initial timeline messages = %v; want [one]", got)
		}
		// State is the state at the start of the timeline; together they hold
		// the whole room state.
		stateTypes := map[string]bool{}
		for _, e := range append(room.State.Events, room.Timeline.Events...) {
			if e.StateKey != nil {
				stateTypes[e.Type] = true
			}
		}
		for _, want := range []string{"m.room.create", "m.room.power_levels", "m.room.name", "m.room.member"} {
			if !stateTypes[want] {
				t.Errorf("initial state and timeline lack %s: %v", want, stateTypes)
			}
		}
		small := doSync(t, bob, "filter="+url.QueryEscape(`{"room":{"timeline":{"limit":1}}}`))
		sr := small.Rooms.Join[roomID]
		if len(sr.Timeline.Events) != 1 || !sr.Timeline.Limited || len(sr.State.Events) < 5 {
			t.Errorf("initial sync with limit 1 = %d timeline events (limited %v), %d state; want 1, true, the room state",
				len(sr.Timeline.Events), sr.Timeline.Limited, len(sr.State.Events))
		}
		if room.Summary["m.joined_member_count"] != float64(2) {
			t.Errorf("summary = %v; want 2 joined", room.Summary)
		}
		if len(first.AccountData.Events) != 1 || first.AccountData.Events[0].Type != "im.test" {
			t.Errorf("account data = %+v", first.AccountData.Events)
		}

		// Nothing new: a zero-timeout sync returns an empty response and the same position.
		idle := doSync(t, bob, "timeout=0&since="+first.NextBatch)
		if len(idle.Rooms.Join) != 0 || idle.NextBatch != first.NextBatch {
			t.Errorf("idle sync = %+v; want nothing new at %s", idle, first.NextBatch)
		}

		// A long poll wakes for a message sent meanwhile.
		done := make(chan syncResp)
		go func() { done <- doSync(t, bob, "timeout=20000&since="+first.NextBatch) }()
		sendText(t, alice, roomID, "2", "two")
		woke := <-done
		if got := bodies(woke.Rooms.Join[roomID].Timeline.Events); len(got) != 1 || got[0] != "two" {
			t.Errorf("long poll timeline = %v; want [two]", got)
		}
		if txn := woke.Rooms.Join[roomID].Timeline.Events[0].Unsigned["transaction_id"]; txn != nil {
			t.Errorf("bob sees transaction_id %v on alice's event; only the sending device may", txn)
		}
		var own syncResp
		alice.MustDo("GET", "/_matrix/client/v3/sync?since="+first.NextBatch, nil, &own)
		if txn := own.Rooms.Join[roomID].Timeline.Events[0].Unsigned["transaction_id"]; txn != "2" {
			t.Errorf("alice's own event has transaction_id %v; want 2", txn)
		}
		if len(woke.Rooms.Join[roomID].State.Events) != 0 {
			t.Errorf("incremental unlimited sync sent state: %v", woke.Rooms.Join[roomID].State.Events)
		}

		// limit 1 over many new events: limited, and prev_batch paginates to the rest.
		for i := 0; i < 20; i++ {
			sendText(t, alice, roomID, fmt.Sprintf("b%d", i), fmt.Sprintf("bulk %d", i))
		}
		limited := doSync(t, bob, "since="+woke.NextBatch+"&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":1}}}`))
		lr := limited.Rooms.Join[roomID]
		if !lr.Timeline.Limited || len(lr.Timeline.Events) != 1 || bodies(lr.Timeline.Events)[0] != "bulk 19" {
			t.Fatalf("limited sync = %+v; want limited with only bulk 19", lr.Timeline)
		}
		rest, _ := messages(t, bob, roomID, "dir=b&limit=100&to="+woke.NextBatch+"&from="+lr.Timeline.PrevBatch)
		if got := bodies(rest); len(got) != 19 || got[0] != "bulk 18" || got[18] != "bulk 0" {
			t.Errorf("paginating from prev_batch = %v; want bulk 18 … bulk 0", got)
		}

		// Invites show in the invite section; leaving shows the leave and nothing after.
		carol := srv.Register(t, "carol", "pw")
		private := createRoom(t, alice, map[string]any{"invite": []string{"@carol:localhost"}, "name": "Secret"})
		cs := doSync(t, carol, "")
		if inv, ok := cs.Rooms.Invite[private]; !ok || len(inv.InviteState.Events) == 0 {
			t.Errorf("carol's invites = %+v; want %s with stripped state", cs.Rooms.Invite, private)
		}
		before := doSync(t, bob, "timeout=0&since="+limited.NextBatch)
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)
		sendText(t, alice, roomID, "gone", "after bob left")
		after := doSync(t, bob, "since="+before.NextBatch)
		left, ok := after.Rooms.Leave[roomID]
		if !ok {
			t.Fatalf("sync after leaving lacks the leave section: %+v", after.Rooms)
		}
		last := left.Timeline.Events[len(left.Timeline.Events)-1]
		if last.Type != "m.room.member" || last.Content["membership"] != "leave" {
			t.Errorf("last event bob sees = %+v; want his leave", last)
		}
		for _, b := range bodies(left.Timeline.Events) {
			if b == "after bob left" {
				t.Error("bob's sync shows a message sent after he left")
			}
		}
		if _, still := after.Rooms.Join[roomID]; still {
			t.Error("room still in join section after leaving")
		}
	})
}

func TestSyncBadInput(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		for _, q := range []string{"since=garbage", "since=s1_x", "timeout=-5", "timeout=soon", "full_state=maybe",
			"filter=%7Bbroken", "filter=999", "filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":"many"}}}`), "set_presence=dancing"} {
			var e errBody
			if st := alice.Do("GET", "/_matrix/client/v3/sync?"+q, nil, &e); st != 400 || e.ErrCode != "M_INVALID_PARAM" {
				t.Errorf("sync?%s = %d %s; want 400 M_INVALID_PARAM", q, st, e.ErrCode)
			}
		}
	})
}

// TestSyncNeverMissesOrDuplicates follows a room with incremental syncs while
// several users send concurrently, and checks every acknowledged event arrives once.
func TestSyncNeverMissesOrDuplicates(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		watcher := srv.Register(t, "watcher", "pw")
		roomID := createRoom(t, watcher, map[string]any{"preset": "public_chat"})
		const senders, each = 4, 15
		clients := make([]*testserver.Client, senders)
		for i := range clients {
			clients[i] = srv.Register(t, fmt.Sprintf("w%d", i), "pw")
			clients[i].MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		}
		pos := doSync(t, watcher, "").NextBatch
		acked := make(chan string, senders*each)
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < each; j++ {
					var out map[string]string
					c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%d-%d", roomID, i, j),
						map[string]string{"msgtype": "m.text", "body": "x"}, &out)
					acked <- out["event_id"]
				}
			}()
		}
		seen := map[string]int{}
		filterQ := url.QueryEscape(`{"room":{"timeline":{"limit":1000,"types":["m.room.message"]}}}`)
		stop := make(chan struct{})
		go func() { wg.Wait(); close(stop) }()
		for finished := false; !finished; {
			select {
			case <-stop:
				finished = true
			default:
			}
			s := doSync(t, watcher, "timeout=200&since="+pos+"&filter="+filterQ)
			for _, e := range s.Rooms.Join[roomID].Timeline.Events {
				seen[e.EventID]++
			}
			if s.Rooms.Join[roomID].Timeline.Limited {
				t.Fatal("timeline limited despite limit 1000")
			}
			pos = s.NextBatch
		}
		// One more sync after the last acknowledgement picks up the tail.
		s := doSync(t, watcher, "timeout=0&since="+pos+"&filter="+filterQ)
		for _, e := range s.Rooms.Join[roomID].Timeline.Events {
			seen[e.EventID]++
		}
		close(acked)
		n := 0
		for id := range acked {
			n++
			if seen[id] != 1 {
				t.Errorf("event %s seen %d times; want exactly once", id, seen[id])
			}
		}
		if n != senders*each || len(seen) != n {
			t.Errorf("acknowledged %d, synced %d distinct; want %d", n, len(seen), senders*each)
		}
	})
}

// TestLegacyEventStream: GET /events from a token lists, flat and each with its
// room_id, the invite, messages and typing after it — nothing from before — and
// a long-poll returns when something arrives.
func TestLegacyEventStream(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		type stream struct {
			Start, End string
			Chunk      []struct {
				event
				RoomID string `json:"room_id"`
			}
		}
		var s stream
		get := func(query string, out *stream) {
			t.Helper()
			bob.MustDo("GET", "/_matrix/client/r0/events?"+query, nil, out)
			// Presence (bob's own, going online by polling) is not what this checks.
			out.Chunk = slices.DeleteFunc(out.Chunk, func(ev struct {
				event
				RoomID string `json:"room_id"`
			}) bool {
				return ev.Type == "m.presence"
			})
		}
		get("timeout=0", &s)
		if s.End == "" || len(s.Chunk) != 0 {
			t.Fatalf("initial /events = %+v; want an end token and nothing", s)
		}
		roomID := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		sendText(t, alice, roomID, "before", "before bob was invited")
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", map[string]string{"user_id": bob.UserID}, nil)
		from := s.End
		get("timeout=0&from="+url.QueryEscape(from), &s)
		if len(s.Chunk) != 1 || s.Chunk[0].Type != "m.room.member" || s.Chunk[0].RoomID != roomID || s.Chunk[0].Content["membership"] != "invite" {
			t.Fatalf("/events after the invite = %+v; want the invite alone", s.Chunk)
		}
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		from = s.End

		// A long-poll, answered when alice talks.
		done := make(chan stream, 1)
		go func() {
			var got stream
			for {
				get("timeout=5000&from="+url.QueryEscape(from), &got)
				for _, ev := range got.Chunk {
					if ev.Type == "m.room.message" {
						done <- got
						return
					}
				}
				from = got.End
			}
		}()
		sendText(t, alice, roomID, "after", "after bob joined")
		got := <-done
		for _, ev := range got.Chunk {
			if ev.RoomID != roomID {
				t.Errorf("event %s has room_id %q", ev.Type, ev.RoomID)
			}
			if ev.Content["body"] == "before bob was invited" {
				t.Errorf("/events returned a message from before the token")
			}
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.UserID, map[string]any{"typing": true, "timeout": 10000}, nil)
		// Polls that wake for something else (bob's own presence) are followed on.
		typing := false
		for from, deadline := got.End, time.Now().Add(10*time.Second); !typing && time.Now().Before(deadline); from = s.End {
			get("timeout=5000&from="+url.QueryEscape(from), &s)
			for _, ev := range s.Chunk {
				typing = typing || ev.Type == "m.typing" && ev.RoomID == roomID
			}
		}
		if !typing {
			t.Errorf("/events after typing never carried m.typing with the room_id")
		}
		var e struct{ ErrCode string }
		if st := bob.Do("GET", "/_matrix/client/r0/events?from=garbage", nil, &e); st != 400 {
			t.Errorf("/events with a bad token = %d %s; want 400", st, e.ErrCode)
		}
	})
}
