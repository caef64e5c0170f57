package appservice_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// BenchmarkPushToService measures a message's way from a client's send to a
// mautrix-go service's event loop: b.N messages sent by eight senders at once,
// timed until the service has them all (sends and pushes overlap, as in
// production).
func BenchmarkPushToService(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			br := newBridge(b, "bench", "benchbot", "  rooms:\n    - exclusive: false\n      regex: '!.*'\n")
			srv := testserver.Start(b, d, withBridges(br))
			br.connect(b, srv)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := collect(ctx, br)
			alice := srv.Register(b, "alice", "pw-alice")
			var room struct {
				RoomID string `json:"room_id"`
			}
			alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, &room)
			b.ResetTimer()
			start := time.Now()
			// Eight senders at once, as a busy room has.
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := w; i < b.N; i += 8 {
						alice.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/b%d", room.RoomID, i),
							map[string]string{"msgtype": "m.text", "body": "x"}, nil)
					}
				}(w)
			}
			wg.Wait()
			for i := 0; i < b.N; i++ {
				select {
				case <-got:
				case <-time.After(30 * time.Second):
					b.Fatalf("service got %d of %d messages", i, b.N)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			b.ReportMetric(float64(len(br.seen()))/float64(b.N), "txns/event")
		})
	}
}
