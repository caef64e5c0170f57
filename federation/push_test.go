package federation_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// notifiedOf returns the notification of eventID for userID the server's push
// evaluator stored, if any.
func notifiedOf(t *testing.T, srv *testserver.Server, userID, eventID string) (push.Notification, bool) {
	t.Helper()
	ns, err := srv.Push.NotificationsSince(context.Background(), 0, 1000)
	if err != nil {
		t.Fatalf("NotificationsSince: %v", err)
	}
	for _, n := range ns {
		if n.UserID == userID && n.EventID == eventID {
			return n, true
		}
	}
	return push.Notification{}, false
}

// TestFederatedEventsAreEvaluated: an event arriving over federation is
// evaluated against the receiving server's members' rules like a local one —
// a mention highlights — and the receiving user's counts in /sync follow; the
// sending server notifies no one of its own user's event, and never evaluates
// for the other server's users.
func TestFederatedEventsAreEvaluated(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, bob, room := joinedPair(t, d)
		var out map[string]string
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/p1", map[string]any{
			"msgtype": "m.text", "body": "over there", "m.mentions": map[string]any{"user_ids": []string{bob.UserID}}}, &out)
		mention := out["event_id"]
		var n push.Notification
		waitFor(t, "B to notify bob of alice's mention", func() bool {
			var ok bool
			n, ok = notifiedOf(t, b, bob.UserID, mention)
			return ok
		})
		if !n.Highlight || n.RoomID != room {
			t.Errorf("bob's notification = %+v; want a highlight in %s", n, room)
		}
		waitFor(t, "bob's /sync on B to count the mention", func() bool {
			var resp struct {
				Rooms struct {
					Join map[string]struct {
						Unread map[string]int `json:"unread_notifications"`
					} `json:"join"`
				} `json:"rooms"`
			}
			bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &resp)
			u := resp.Rooms.Join[room].Unread
			return u["notification_count"] == 1 && u["highlight_count"] == 1
		})
		// The other way: bob's reply is evaluated on A for alice.
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/p2", map[string]any{
			"msgtype": "m.text", "body": "answer"}, &out)
		reply := out["event_id"]
		waitFor(t, "A to notify alice of bob's reply", func() bool {
			_, ok := notifiedOf(t, a, alice.UserID, reply)
			return ok
		})
		if _, ok := notifiedOf(t, a, bob.UserID, mention); ok {
			t.Errorf("A stored a notification for B's user bob")
		}
		if _, ok := notifiedOf(t, a, alice.UserID, mention); ok {
			t.Errorf("A notified alice of her own event")
		}
	})
}
