package clientapi_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestDelayedEventsRefuseOutsiders: no token, no access; another user can neither
// see nor act on my delayed events; bad delays and actions are Matrix errors; a
// delayed event into a room its sender is not in is refused when it falls due.
func TestDelayedEventsRefuseOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		eve := srv.Register(t, "eve", "pw")
		room := createRoom(t, alice, map[string]any{})
		id := scheduleMessage(t, alice, room, "x1", "mine", time.Hour)

		anon := srv.Client(t)
		wantErr(t, anon, "GET", msc4140+"/delayed_events", nil, 401, "M_MISSING_TOKEN")
		for _, a := range []string{"", "/restart", "/cancel", "/send"} {
			wantErr(t, anon, "POST", msc4140+"/delayed_events/"+id+a, map[string]string{"action": "cancel"}, 401, "M_MISSING_TOKEN")
		}
		wantErr(t, anon, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/a?org.matrix.msc4140.delay=10", url.PathEscape(room)),
			map[string]string{"body": "x"}, 401, "M_MISSING_TOKEN")

		// Eve sees none of alice's and cannot touch them.
		if l := listDelayed(t, eve); len(l.DelayedEvents) != 0 {
			t.Fatalf("eve lists %+v; want none", l.DelayedEvents)
		}
		for _, a := range []string{"restart", "cancel", "send"} {
			wantErr(t, eve, "POST", msc4140+"/delayed_events/"+id, map[string]string{"action": a}, 404, "M_NOT_FOUND")
			wantErr(t, eve, "POST", msc4140+"/delayed_events/"+id+"/"+a, map[string]any{}, 404, "M_NOT_FOUND")
		}
		if l := listDelayed(t, alice); len(l.DelayedEvents) != 1 || l.DelayedEvents[0].DelayID != id {
			t.Fatalf("alice's pending after eve's tries = %+v; want %s untouched", l.DelayedEvents, id)
		}

		send := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/", url.PathEscape(room))
		for _, tc := range []struct{ name, query string }{
			{"over max", fmt.Sprint(25 * time.Hour.Milliseconds())},
			{"negative", "-5"},
			{"not a number", "soon"},
			{"huge", "99999999999999999999999"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantErr(t, alice, "PUT", send+"b"+url.PathEscape(tc.name)+"?org.matrix.msc4140.delay="+url.QueryEscape(tc.query),
					map[string]string{"body": "x"}, 400, "M_INVALID_PARAM")
			})
		}
		wantErr(t, alice, "POST", msc4140+"/delayed_events/"+id, map[string]string{"action": "explode"}, 400, "M_INVALID_PARAM")
		wantErr(t, alice, "POST", msc4140+"/delayed_events/"+id, "not json", 400, "M_NOT_JSON")

		// Eve schedules into alice's room, which she is not in: accepted (the rules
		// apply when it is sent) but never sent; alice's marker proves time passed.
		since := doSync(t, alice, "").NextBatch
		var out map[string]string
		eve.MustDo("PUT", send+"e1?org.matrix.msc4140.delay=200", map[string]string{"msgtype": "m.text", "body": "intrusion"}, &out)
		scheduleMessage(t, alice, room, "m1", "marker", 1200*time.Millisecond)
		seen, _ := waitTimeline(t, alice, since, room, isText("marker"))
		for _, ev := range seen {
			if ev.Sender == eve.UserID {
				t.Fatalf("eve's delayed event reached a room she is not in: %+v", ev)
			}
		}
		if l := listDelayed(t, eve); len(l.DelayedEvents) != 0 {
			t.Fatalf("eve's refused event still pending: %+v", l.DelayedEvents)
		}
	})
}
