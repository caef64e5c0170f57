package appservice_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// collect gathers the bodies of the m.room.message events the service's event
// loop receives, in order, until ctx ends.
func collect(ctx context.Context, b *bridge) <-chan string {
	out := make(chan string, 1000)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case evt := <-b.AS.Events:
				if evt.Type != event.EventMessage {
					continue
				}
				_ = evt.Content.ParseRaw(evt.Type)
				out <- evt.Content.AsMessage().Body
			}
		}
	}()
	return out
}

// TestDownServiceGetsEverythingInOrder takes the service down, sends messages,
// restarts the homeserver while it is still down, sends more, and brings it
// back: every message arrives once, in order; every retry of a transaction
// carries the same ID and the same events; then a transaction whose answer is
// lost is retried under its ID and its events are not delivered twice.
func TestDownServiceGetsEverythingInOrder(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		// The room namespace takes every room: the service sees all events.
		b := newBridge(t, "relay", "relaybot", "  rooms:\n    - exclusive: false\n      regex: '!.*'\n")
		srv := testserver.Start(t, d, withBridges(b))
		b.connect(t, srv)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got := collect(ctx, b)

		alice := srv.Register(t, "alice", "pw-alice")
		var room struct {
			RoomID string `json:"room_id"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, &room)
		send := func(i int) {
			alice.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/m%d", room.RoomID, i),
				map[string]string{"msgtype": "m.text", "body": "m" + strconv.Itoa(i)}, nil)
		}
		expect := func(from, to int) {
			t.Helper()
			for i := from; i <= to; i++ {
				select {
				case body := <-got:
					if body != "m"+strconv.Itoa(i) {
						t.Fatalf("service received %q; want m%d (in order, once)", body, i)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("service never received m%d", i)
				}
			}
		}

		send(1)
		expect(1, 1)

		b.down.Store(true)
		for i := 2; i <= 5; i++ {
			send(i)
		}
		waitFor(t, "the homeserver to try the service while it is down", func() bool { return b.refused.Load() >= 2 })
		srv.Restart(t)
		b.connect(t, srv)
		refusedBefore := b.refused.Load()
		for i := 6; i <= 8; i++ {
			send(i)
		}
		waitFor(t, "the restarted homeserver to try the service", func() bool { return b.refused.Load() > refusedBefore })
		b.down.Store(false)
		expect(2, 8)

		// A lost answer: the service processed the transaction, the homeserver
		// never heard so, and retries it under the same ID.
		b.loseAnswers.Store(1)
		before := len(b.seen())
		send(9)
		waitFor(t, "the retry of the transaction whose answer was lost", func() bool {
			s := b.seen()[before:]
			return len(s) >= 2 && s[len(s)-1].ID == s[0].ID
		})
		send(10)
		expect(9, 10)
		select {
		case extra := <-got:
			t.Fatalf("service received %q again", extra)
		default:
		}

		// Each transaction ID always carried the same events; IDs never went back.
		bodies := map[string][]byte{}
		last := int64(0)
		for _, tx := range b.seen() {
			if prev, ok := bodies[tx.ID]; ok {
				if !bytes.Equal(prev, tx.Body) {
					t.Errorf("transaction %s retried with different events:\n%s\n%s", tx.ID, prev, tx.Body)
				}
				continue
			}
			bodies[tx.ID] = tx.Body
			n, err := strconv.ParseInt(tx.ID, 10, 64)
			if err != nil || n <= last {
				t.Errorf("transaction ID %q after %d; want increasing numbers", tx.ID, last)
			}
			last = n
		}
	})
}
