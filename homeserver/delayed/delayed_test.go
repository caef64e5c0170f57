package delayed_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/delayed"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestOneNodeFiresEach: with a second scheduler on the same database (a second
// node), every due event is sent exactly once.
func TestOneNodeFiresEach(t *testing.T) {
	t.Parallel()
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			srv := testserver.Start(t, d)
			other := delayed.New(delayed.Config{Poll: 5 * time.Millisecond}, srv.DB, srv.Rooms)
			other.Start(context.Background())
			t.Cleanup(other.Close)

			alice := srv.Register(t, "alice", "pw")
			var created map[string]string
			alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, &created)
			room := created["room_id"]
			const n = 20
			for i := range n {
				alice.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d?org.matrix.msc4140.delay=300", url.PathEscape(room), i),
					map[string]string{"msgtype": "m.text", "body": fmt.Sprint("d", i)}, nil)
			}
			// Wait until every one is in the room (a claimed event is no longer
			// pending but may not be sent yet), then count them.
			type message struct {
				Type    string         `json:"type"`
				Content map[string]any `json:"content"`
			}
			var seen map[string]int
			deadline := time.Now().Add(20 * time.Second)
			for {
				var msgs struct {
					Chunk []message `json:"chunk"`
				}
				alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", nil, &msgs)
				seen = map[string]int{}
				for _, ev := range msgs.Chunk {
					if ev.Type == "m.room.message" {
						seen[fmt.Sprint(ev.Content["body"])]++
					}
				}
				if len(seen) == n {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("only %d of %d delayed events sent by the deadline: %v", len(seen), n, seen)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if pending, err := srv.Delayed.List(context.Background(), alice.UserID); err != nil || len(pending) != 0 {
				t.Fatalf("pending after all were sent = %v, %v; want none", pending, err)
			}
			for i := range n {
				if c := seen[fmt.Sprint("d", i)]; c != 1 {
					t.Fatalf("event d%d sent %d times; want exactly once (all: %v)", i, c, seen)
				}
			}
		})
	}
}
