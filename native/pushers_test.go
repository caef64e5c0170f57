package native_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native/sdk"
)

// TestNotificationPushes: a native session is told, as a "notification" push,
// of every event its user's push rules say notifies them, with the room's unread
// counts, and a read receipt
// brings the count down for the next one.
func TestNotificationPushes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		var created map[string]string
		bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "invite": []string{alice.UserID}}, &created)
		room := created["room_id"]
		alice.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		nat := dial(t, srv, sdk.Options{Token: alice.Token})
		say := func(c *testserver.Client, body string) string {
			var out map[string]string
			c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/"+sdk.TxnID(),
				map[string]any{"msgtype": "m.text", "body": body}, &out)
			return out["event_id"]
		}
		// Counts are read when the notification is pushed: each message waits for
		// the push of the one before.
		var second string
		for i, count := range []int{1, 2} {
			ev := say(bob, "message")
			second = ev
			p := next(t, nat, "the message's notification", func(p sdk.Push) bool { return p.Notification != nil && p.Notification.EventID == ev })
			if n := p.Notification; n.RoomID != room || n.NotificationCount != count || n.Sound != "default" {
				t.Errorf("notification push %d = %+v; want %s in %s, count %d, sound default", i, n, ev, room, count)
			}
		}
		if err := nat.Receipt(ctx, room, second); err != nil {
			t.Fatal(err)
		}
		third := say(bob, "three")
		p := next(t, nat, "the third message's notification", func(p sdk.Push) bool { return p.Notification != nil && p.Notification.EventID == third })
		if n := p.Notification; n.NotificationCount != 1 {
			t.Errorf("notification after the receipt = %+v; want %s with count 1", n, third)
		}
	})
}
