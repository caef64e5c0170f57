package push_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// eachEngine runs fn once per database engine with a fresh server.
func eachEngine(t *testing.T, fn func(t *testing.T, srv *testserver.Server)) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, testserver.Start(t, d))
		})
	}
}

// waitNotified waits until the evaluator has stored a notification of eventID for
// userID and returns it.
func waitNotified(t *testing.T, s *push.Service, userID, eventID string) push.Notification {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ns, err := s.NotificationsSince(context.Background(), 0, 10_000)
		if err != nil {
			t.Fatalf("NotificationsSince: %v", err)
		}
		for _, n := range ns {
			if n.UserID == userID && n.EventID == eventID {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no notification of %s for %s within 10s", eventID, userID)
	return push.Notification{}
}

func createRoom(t *testing.T, c *testserver.Client, body map[string]any) string {
	t.Helper()
	var out struct {
		RoomID string `json:"room_id"`
	}
	c.MustDo("POST", "/_matrix/client/v3/createRoom", body, &out)
	return out.RoomID
}

var txn int

func send(t *testing.T, c *testserver.Client, roomID, typ string, content map[string]any) string {
	t.Helper()
	txn++
	var out struct {
		EventID string `json:"event_id"`
	}
	c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/t%d-%d", url.PathEscape(roomID), typ, time.Now().UnixNano(), txn), content, &out)
	return out.EventID
}

func TestEvaluatorNotifiesMembers(t *testing.T) {
	eachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"invite": []string{bob.UserID}, "is_direct": true})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, nil)
		msg := send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hello"})
		n := waitNotified(t, srv.Push, bob.UserID, msg)
		if n.Highlight || n.RoomID != roomID {
			t.Errorf("notification = %+v; want no highlight in %s", n, roomID)
		}
		mention := send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob!",
			"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
		if n := waitNotified(t, srv.Push, bob.UserID, mention); !n.Highlight {
			t.Errorf("mention notification = %+v; want highlight", n)
		}
		counts, err := srv.Push.UnreadCounts(context.Background(), bob.UserID, []string{roomID}, false)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := counts[roomID].Counts, (push.Counts{Notifications: 2, Highlights: 1}); got != want {
			t.Errorf("UnreadCounts = %+v; want %+v", got, want)
		}
		bob.MustDo("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", url.PathEscape(roomID), url.PathEscape(msg)), map[string]any{}, nil)
		counts, _ = srv.Push.UnreadCounts(context.Background(), bob.UserID, []string{roomID}, false)
		if got, want := counts[roomID].Counts, (push.Counts{Notifications: 1, Highlights: 1}); got != want {
			t.Errorf("UnreadCounts after reading the first = %+v; want %+v", got, want)
		}
		// The sender is never notified of their own events.
		ns, _ := srv.Push.NotificationsSince(context.Background(), 0, 100)
		for _, n := range ns {
			if n.UserID == alice.UserID && n.EventID == msg {
				t.Errorf("alice notified of her own message: %+v", n)
			}
		}
	})
}
