package clientapi_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

const msc4140 = "/_matrix/client/unstable/org.matrix.msc4140"

type delayedList struct {
	DelayedEvents []struct {
		DelayID  string         `json:"delay_id"`
		RoomID   string         `json:"room_id"`
		Type     string         `json:"type"`
		StateKey *string        `json:"state_key"`
		Delay    int64          `json:"delay"`
		Content  map[string]any `json:"content"`
	} `json:"delayed_events"`
}

func listDelayed(t *testing.T, c *testserver.Client) delayedList {
	t.Helper()
	var l delayedList
	c.MustDo("GET", msc4140+"/delayed_events", nil, &l)
	return l
}

// scheduleMessage schedules an m.room.message with the delay and returns its delay ID.
func scheduleMessage(t *testing.T, c *testserver.Client, roomID, txn, body string, delay time.Duration) string {
	t.Helper()
	var out map[string]string
	c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%s?org.matrix.msc4140.delay=%d",
		url.PathEscape(roomID), txn, delay.Milliseconds()), map[string]string{"msgtype": "m.text", "body": body}, &out)
	if out["delay_id"] == "" || out["event_id"] != "" {
		t.Fatalf("delayed send = %v; want a delay_id and no event_id", out)
	}
	return out["delay_id"]
}

// waitTimeline syncs as c from since until an event of the room's timeline matches,
// and returns every timeline event of the room it saw on the way (the match last).
func waitTimeline(t *testing.T, c *testserver.Client, since, roomID string, match func(event) bool) ([]event, string) {
	t.Helper()
	var seen []event
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		q := "timeout=1000"
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		s := doSync(t, c, q)
		since = s.NextBatch
		for _, ev := range s.Rooms.Join[roomID].Timeline.Events {
			seen = append(seen, ev)
			if match(ev) {
				return seen, since
			}
		}
	}
	t.Fatalf("%s: no matching event in %s's timeline within the deadline; saw %d events", c, roomID, len(seen))
	return nil, ""
}

func isText(body string) func(event) bool {
	return func(ev event) bool { return ev.Type == "m.room.message" && ev.Content["body"] == body }
}

// TestDelayedMessageFires: a delayed message is listed while pending, then sent as
// its sender when the delay runs out, and seen by the other members in /sync.
func TestDelayedMessageFires(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		since := doSync(t, bob, "").NextBatch

		id := scheduleMessage(t, alice, room, "t1", "later", 700*time.Millisecond)
		seen, _ := waitTimeline(t, bob, since, room, isText("later"))
		if got := seen[len(seen)-1]; got.Sender != alice.UserID {
			t.Fatalf("delayed event sender = %s; want %s", got.Sender, alice.UserID)
		}
		if l := listDelayed(t, alice); len(l.DelayedEvents) != 0 {
			t.Fatalf("after firing, pending = %+v; want none (%s fired)", l.DelayedEvents, id)
		}

		// A pending one is listed with its room, type, delay and content; a retried
		// request (same txnId) schedules it once.
		pendingID := scheduleMessage(t, alice, room, "t2", "much later", time.Hour)
		if again := scheduleMessage(t, alice, room, "t2", "much later", time.Hour); again != pendingID {
			t.Fatalf("retried delayed send = %s; want the same delay_id %s", again, pendingID)
		}
		l := listDelayed(t, alice)
		if len(l.DelayedEvents) != 1 || l.DelayedEvents[0].RoomID != room || l.DelayedEvents[0].Type != "m.room.message" ||
			l.DelayedEvents[0].Delay != time.Hour.Milliseconds() || l.DelayedEvents[0].Content["body"] != "much later" || l.DelayedEvents[0].StateKey != nil {
			t.Fatalf("pending = %+v; want the one-hour message", l.DelayedEvents)
		}

		var v struct {
			Unstable map[string]bool `json:"unstable_features"`
		}
		alice.MustDo("GET", "/_matrix/client/versions", nil, &v)
		if !v.Unstable["org.matrix.msc4140"] {
			t.Fatalf("/versions unstable_features = %v; want org.matrix.msc4140", v.Unstable)
		}
	})
}

// TestDelayedEventActions: cancel prevents the event, send fires it at once, and
// both routes (action in the body, action in the path) work.
func TestDelayedEventActions(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{})
		since := doSync(t, alice, "").NextBatch

		cancelled := scheduleMessage(t, alice, room, "c1", "cancelled", 500*time.Millisecond)
		alice.MustDo("POST", msc4140+"/delayed_events/"+cancelled, map[string]string{"action": "cancel"}, nil)
		cancelled2 := scheduleMessage(t, alice, room, "c2", "cancelled too", 500*time.Millisecond)
		alice.MustDo("POST", msc4140+"/delayed_events/"+cancelled2+"/cancel", map[string]any{}, nil)
		// A later event is the positive signal that the cancelled ones' time has passed.
		scheduleMessage(t, alice, room, "m1", "marker", 1500*time.Millisecond)
		seen, since := waitTimeline(t, alice, since, room, isText("marker"))
		for _, ev := range seen {
			if ev.Type == "m.room.message" && ev.Content["body"] != "marker" {
				t.Fatalf("cancelled delayed event was sent: %+v", ev)
			}
		}

		// send fires a one-hour event at once, by either route.
		now := scheduleMessage(t, alice, room, "s1", "now", time.Hour)
		alice.MustDo("POST", msc4140+"/delayed_events/"+now, map[string]string{"action": "send"}, nil)
		since2 := since
		_, since = waitTimeline(t, alice, since2, room, isText("now"))
		now2 := scheduleMessage(t, alice, room, "s2", "now too", time.Hour)
		alice.MustDo("POST", msc4140+"/delayed_events/"+now2+"/send", map[string]any{}, nil)
		waitTimeline(t, alice, since, room, isText("now too"))
		if l := listDelayed(t, alice); len(l.DelayedEvents) != 0 {
			t.Fatalf("pending after send = %+v; want none", l.DelayedEvents)
		}
		// A sent or cancelled one is gone.
		wantErr(t, alice, "POST", msc4140+"/delayed_events/"+now+"/send", map[string]any{}, 404, "M_NOT_FOUND")
		wantErr(t, alice, "POST", msc4140+"/delayed_events/"+cancelled+"/restart", map[string]any{}, 404, "M_NOT_FOUND")
	})
}

// TestDelayedEventSurvivesRestart: an event that falls due while the server is down
// is sent after it comes back; the restart cancels nothing.
func TestDelayedEventSurvivesRestart(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{})
		since := doSync(t, alice, "").NextBatch
		scheduleMessage(t, alice, room, "r1", "after restart", 500*time.Millisecond)
		due := time.Now().Add(500 * time.Millisecond)
		srv.Stop()
		for time.Now().Before(due) { // let it fall due while nothing runs
			time.Sleep(50 * time.Millisecond)
		}
		srv.Resume(t)
		waitTimeline(t, alice, since, room, isText("after restart"))
	})
}

// TestDelayedCallMemberLeave is Element Call's case: a client schedules its
// m.call.member leave (empty content) before it joins, keeps restarting the delay
// while it lives, then dies; the leave fires within the delay and the others see
// the member's call state end. While the client heartbeats, nothing fires, so the
// restart action is what postpones it.
func TestDelayedCallMemberLeave(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		// Element Call lets every member send call member state.
		room := createRoom(t, alice, map[string]any{"preset": "public_chat",
			"power_level_content_override": map[string]any{"events": map[string]int{"org.matrix.msc3401.call.member": 0}}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		stateKey := "_" + bob.UserID + "_" + bob.Device
		statePath := fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/org.matrix.msc3401.call.member/%s", url.PathEscape(room), url.PathEscape(stateKey))
		since := doSync(t, alice, "").NextBatch

		const delay = 3 * time.Second
		var out map[string]string
		bob.MustDo("PUT", statePath+fmt.Sprintf("?org.matrix.msc4140.delay=%d", delay.Milliseconds()), map[string]any{}, &out)
		leave := out["delay_id"]
		if leave == "" {
			t.Fatalf("delayed leave = %v; want a delay_id", out)
		}
		join := map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": bob.Device,
			"focus_active": map[string]string{"type": "livekit", "focus_selection": "oldest_membership"}}
		bob.MustDo("PUT", statePath, join, nil) // bob's own join keeps his delayed leave
		if l := listDelayed(t, bob); len(l.DelayedEvents) != 1 || l.DelayedEvents[0].DelayID != leave {
			t.Fatalf("pending after join = %+v; want the leave %s", l.DelayedEvents, leave)
		}

		// Heartbeat for longer than the delay: the leave must not fire meanwhile.
		until := time.Now().Add(delay + 2*time.Second)
		for time.Now().Before(until) {
			bob.MustDo("POST", msc4140+"/delayed_events/"+leave, map[string]string{"action": "restart"}, nil)
			var content map[string]any
			alice.MustDo("GET", statePath, nil, &content)
			if content["application"] != "m.call" {
				t.Fatalf("call member state = %v while bob heartbeats; want his join", content)
			}
			time.Sleep(300 * time.Millisecond) // the client's heartbeat interval
		}

		// Bob dies. Alice sees his call state emptied within the delay (plus slack).
		died := time.Now()
		seen, _ := waitTimeline(t, alice, since, room, func(ev event) bool {
			return ev.Type == "org.matrix.msc3401.call.member" && ev.StateKey != nil && *ev.StateKey == stateKey && len(ev.Content) == 0
		})
		if took := time.Since(died); took > delay+5*time.Second {
			t.Fatalf("leave fired %v after the client died; want within about %v", took, delay)
		}
		if got := seen[len(seen)-1]; got.Sender != bob.UserID {
			t.Fatalf("leave sender = %s; want %s", got.Sender, bob.UserID)
		}
		var content map[string]any
		alice.MustDo("GET", statePath, nil, &content)
		if len(content) != 0 {
			t.Fatalf("call member state after leave = %v; want empty", content)
		}
	})
}

// TestDelayedStateCancelledByOthers: a pending delayed state event is cancelled when
// another user sets the same state normally (the state it was scheduled against
// no longer holds), not when its own sender does.
func TestDelayedStateCancelledByOthers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat",
			"power_level_content_override": map[string]any{"state_default": 0}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/org.example.topic/", url.PathEscape(room))
		alice.MustDo("PUT", path+"?org.matrix.msc4140.delay=3600000", map[string]string{"v": "delayed"}, nil)
		alice.MustDo("PUT", path, map[string]string{"v": "alice"}, nil)
		if l := listDelayed(t, alice); len(l.DelayedEvents) != 1 {
			t.Fatalf("pending after the sender's own set = %+v; want it kept", l.DelayedEvents)
		}
		bob.MustDo("PUT", path, map[string]string{"v": "bob"}, nil)
		if l := listDelayed(t, alice); len(l.DelayedEvents) != 0 {
			t.Fatalf("pending after another user's set = %+v; want it cancelled", l.DelayedEvents)
		}
	})
}
