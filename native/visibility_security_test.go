package native_test

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// TestLateJoinerCannotReadHistoryNatively: in a room whose history is visible to
// joined members only, a native client of bob, who joined after a message was sent,
// reads neither that message through history nor by resuming from seq 0 (the
// client picks the seq), while the message sent after his join comes both ways.
func TestLateJoinerCannotReadHistoryNatively(t *testing.T) {
	t.Parallel()
	const secretBody, openBody = "sent before bob joined", "sent after bob joined"
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "initial_state": []map[string]any{{
			"type": "m.room.history_visibility", "state_key": "", "content": map[string]string{"history_visibility": "joined"}}}}, &created)
		room := created["room_id"]
		say := func(txn, body string) {
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/"+txn,
				map[string]string{"msgtype": "m.text", "body": body}, nil)
		}
		// Enough history that a resume from 0 would need more than one read.
		for _, txn := range []string{"s1", "s2", "s3"} {
			say(txn, secretBody)
		}
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		say("o1", openBody)

		bodyOf := func(ev native.Event) string { s, _ := ev.Content["body"].(string); return s }
		t.Run("history", func(t *testing.T) {
			c := dial(t, srv, sdk.Options{Token: bob.Token, NoReconnect: true})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var got []string
			before := int64(0)
			for range 10 {
				page, err := c.History(ctx, room, before, 100)
				if err != nil {
					t.Fatalf("history: %v", err)
				}
				for _, ev := range page.Events {
					got = append(got, bodyOf(ev))
				}
				if page.NextBeforeSeq == 0 {
					break
				}
				before = page.NextBeforeSeq
			}
			if slices.Contains(got, secretBody) || !slices.Contains(got, openBody) {
				t.Errorf("history for bob = %q; want %q and nothing sent before he joined", got, openBody)
			}
			hangUp(t, srv, c)
		})
		t.Run("resume from 0", func(t *testing.T) {
			c := dial(t, srv, sdk.Options{Token: bob.Token, NoReconnect: true, Resume: map[string]int64{room: 0}})
			var got []string
			next(t, c, "the message sent after bob joined", func(p sdk.Push) bool {
				if p.Event == nil || p.Event.RoomID != room {
					return false
				}
				got = append(got, bodyOf(p.Event.Event))
				return bodyOf(p.Event.Event) == openBody
			})
			if slices.Contains(got, secretBody) {
				t.Errorf("resume from seq 0 pushed %q; want nothing sent before bob joined", got)
			}
			hangUp(t, srv, c)
		})
	})
}

// hangUp closes the client and waits until the server has ended its session, so
// that the server's shutdown finds none to close.
func hangUp(t *testing.T, srv *testserver.Server, c *sdk.Client) {
	t.Helper()
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Native.Sessions() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the server still holds %d native sessions 10 s after the client closed", srv.Native.Sessions())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
