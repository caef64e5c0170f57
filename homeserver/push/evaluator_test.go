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

// TestSharedRowAndExceptions checks the storage of one event in a room where most
// members share the outcome: one room row, rows of their own only for the
// mentioned member (highlight) and the member who ignores the sender (no
// notification), and the counts, the consumer stream and /notifications as if
// every member had a row.
func TestSharedRowAndExceptions(t *testing.T) {
	eachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		members := map[string]*testserver.Client{}
		for _, name := range []string{"bob", "carol", "dave", "erin", "gina"} {
			c := srv.Register(t, name, "pw")
			c.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, nil)
			members[name] = c
		}
		members["dave"].MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/user/%s/account_data/m.ignored_user_list", url.PathEscape(members["dave"].UserID)),
			map[string]any{"ignored_users": map[string]any{alice.UserID: map[string]any{}}}, nil)
		msg := send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hi carol",
			"m.mentions": map[string]any{"user_ids": []string{members["carol"].UserID}}})
		waitNotified(t, srv.Push, members["erin"].UserID, msg)
		frank := srv.Register(t, "frank", "pw") // joins after the message
		frank.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, nil)

		var shared, own int
		if err := srv.DB.QueryRow(ctx, `SELECT COUNT(*) FROM push_room_notifications WHERE event_id = $1`, msg).Scan(&shared); err != nil {
			t.Fatal(err)
		}
		if err := srv.DB.QueryRow(ctx, `SELECT COUNT(*) FROM push_notifications WHERE event_id = $1`, msg).Scan(&own); err != nil {
			t.Fatal(err)
		}
		if shared != 1 || own != 2 {
			t.Errorf("rows of the message: %d shared, %d own; want 1 and 2 (carol's highlight, dave's none)", shared, own)
		}

		ns, err := srv.Push.NotificationsSince(ctx, 0, 10_000)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, n := range ns {
			if n.EventID == msg {
				got[n.UserID] = n.Highlight
			}
		}
		want := map[string]bool{members["bob"].UserID: false, members["carol"].UserID: true, members["erin"].UserID: false, members["gina"].UserID: false}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("NotificationsSince for the message = %v; want %v", got, want)
		}

		for _, tc := range []struct {
			who  *testserver.Client
			want push.Counts
		}{
			{members["bob"], push.Counts{Notifications: 1}},
			{members["carol"], push.Counts{Notifications: 1, Highlights: 1}},
			{members["dave"], push.Counts{}},
			{members["erin"], push.Counts{Notifications: 1}},
			{members["gina"], push.Counts{Notifications: 1}},
			{alice, push.Counts{}},
			{frank, push.Counts{}},
		} {
			counts, err := srv.Push.UnreadCounts(ctx, tc.who.UserID, []string{roomID}, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := counts[roomID].Counts; got != tc.want {
				t.Errorf("UnreadCounts of %s = %+v; want %+v", tc.who.UserID, got, tc.want)
			}
			page, err := srv.Push.List(ctx, tc.who.UserID, "", 10, false)
			if err != nil {
				t.Fatal(err)
			}
			if listed := len(page.Notifications); listed != tc.want.Notifications {
				t.Errorf("List of %s has %d notifications; want %d", tc.who.UserID, listed, tc.want.Notifications)
			}
		}
		// A receipt reads the shared row for the one who sent it only.
		members["bob"].MustDo("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", url.PathEscape(roomID), url.PathEscape(msg)), map[string]any{}, nil)
		for who, want := range map[string]int{members["bob"].UserID: 0, members["erin"].UserID: 1} {
			counts, _ := srv.Push.UnreadCounts(ctx, who, []string{roomID}, false)
			if got := counts[roomID].Notifications; got != want {
				t.Errorf("after bob's receipt, %s has %d unread; want %d", who, got, want)
			}
		}
	})
}
