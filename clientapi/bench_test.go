package clientapi_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hongyan/hongyan/bench/loadgen"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// BenchmarkRegister measures registration over HTTP with the production argon2id
// cost, clients in parallel, on each engine. Results: bench/RESULTS.md.
func BenchmarkRegister(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d, testserver.ProductionHashing)
			var n atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := srv.Client(b)
				for pb.Next() {
					i := n.Add(1)
					if st := c.Do("POST", "/_matrix/client/v3/register", map[string]any{
						"username": fmt.Sprintf("u%d", i), "password": "pw-bench",
						"auth": map[string]string{"type": "m.login.dummy"},
					}, nil); st != 200 {
						b.Errorf("register = %d", st)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
		})
	}
}

// BenchmarkLogin measures password logins of one account, clients in parallel.
func BenchmarkLogin(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d, testserver.ProductionHashing)
			srv.Register(b, "bench", "pw-bench")
			body := map[string]any{"type": "m.login.password", "user": "bench", "password": "pw-bench"}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := srv.Client(b)
				for pb.Next() {
					if st := c.Do("POST", "/_matrix/client/v3/login", body, nil); st != 200 {
						b.Errorf("login = %d", st)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}

// BenchmarkWhoami measures an authenticated request: token lookup and routing.
func BenchmarkWhoami(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d)
			c := srv.Register(b, "bench", "pw-bench")
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				cc := c.WithToken(c.Token)
				for pb.Next() {
					if st := cc.Do("GET", "/_matrix/client/v3/account/whoami", nil, nil); st != 200 {
						b.Errorf("whoami = %d", st)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
		})
	}
}

// BenchmarkSendMessage measures PUT /send into one room by several members in
// parallel: the per-room serialised write path (build, sign, auth, persist, notify).
func BenchmarkSendMessage(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d)
			owner := srv.Register(b, "owner", "pw")
			var room map[string]string
			owner.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
			var n atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := srv.Register(b, fmt.Sprintf("s%d", n.Add(1)), "pw")
				c.MustDo("POST", "/_matrix/client/v3/join/"+room["room_id"], map[string]any{}, nil)
				i := 0
				for pb.Next() {
					i++
					if st := c.Do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%d", room["room_id"], i),
						map[string]string{"msgtype": "m.text", "body": "hello"}, nil); st != 200 {
						b.Errorf("send = %d", st)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkSyncWake measures how long after a message is sent a receiver's parked
// long-poll /sync returns with it: send → visible, through the commit, the bus
// notice and the notifier. Reports p50 and p99.
func BenchmarkSyncWake(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d)
			sender := srv.Register(b, "sender", "pw")
			receiver := srv.Register(b, "receiver", "pw")
			var room map[string]string
			sender.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
			receiver.MustDo("POST", "/_matrix/client/v3/join/"+room["room_id"], map[string]any{}, nil)
			var s struct {
				NextBatch string `json:"next_batch"`
			}
			receiver.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
			since := s.NextBatch
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				got := make(chan string, 1)
				go func() {
					var r struct {
						NextBatch string `json:"next_batch"`
					}
					receiver.MustDo("GET", "/_matrix/client/v3/sync?timeout=30000&since="+since, nil, &r)
					got <- r.NextBatch
				}()
				time.Sleep(2 * time.Millisecond) // let the poll park before sending
				start := time.Now()
				sender.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/w%d", room["room_id"], i),
					map[string]string{"msgtype": "m.text", "body": "ping"}, nil)
				since = <-got
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkLargeRoom measures the reads and writes of a room with many members
// (HONGYAN_BENCH_MEMBERS, default 10 000): sending, a current-state lookup, the member
// list, and a member's lazy-loading initial sync.
func BenchmarkLargeRoom(b *testing.B) {
	members := 10000
	if v := os.Getenv("HONGYAN_BENCH_MEMBERS"); v != "" {
		fmt.Sscan(v, &members)
	}
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d)
			owner := srv.Register(b, "owner", "pw")
			var room map[string]string
			owner.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Big"}, &room)
			roomID := room["room_id"]
			ctx := context.Background()
			start := time.Now()
			for i := 0; i < members; i++ {
				u := fmt.Sprintf("@m%d:localhost", i)
				if _, err := srv.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: u, Target: u, Membership: "join"}); err != nil {
					b.Fatal(err)
				}
			}
			b.Logf("%d joins in %v", members, time.Since(start).Round(time.Millisecond))
			member := srv.Register(b, "reader", "pw")
			member.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
			for i := 0; i < 50; i++ {
				owner.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/h%d", roomID, i), map[string]string{"msgtype": "m.text", "body": "history"}, nil)
			}
			lazy := url.QueryEscape(`{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":20}}}`)
			n := 0
			for _, bc := range []struct {
				name string
				do   func()
			}{
				{"send", func() {
					n++
					owner.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/s%d", roomID, n), map[string]string{"msgtype": "m.text", "body": "hi"}, nil)
				}},
				{"state_event", func() { member.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.name", nil, nil) }},
				{"joined_members", func() { member.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/joined_members", nil, nil) }},
				{"initial_sync_lazy", func() { member.MustDo("GET", "/_matrix/client/v3/sync?filter="+lazy, nil, nil) }},
				{"messages", func() { member.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=b&limit=20", nil, nil) }},
			} {
				b.Run(bc.name, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						bc.do()
					}
				})
			}
		})
	}
}

// BenchmarkFanout runs the load harness's fan-out scenario in process: 100 members
// long-poll /sync while one sends 20 messages/s; reports delivery latency. In process
// so that it can be profiled (-cpuprofile); bench/cmd/loadgen runs the same scenario
// against a separate server process.
func BenchmarkFanout(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d)
			cfg := loadgen.Config{Base: srv.URL, Prefix: "f", HTTP: loadgen.NewHTTP(200)}
			for i := 0; i < b.N; i++ {
				cfg.Prefix = fmt.Sprintf("f%d", i)
				r, err := loadgen.RunFanout(context.Background(), cfg, 100, 20, 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				for _, k := range []string{"p50_ms", "p99_ms", "delivered_share"} {
					b.ReportMetric(r[k].(float64), k)
				}
			}
		})
	}
}

// BenchmarkSendManyRooms sends into 100 rooms in parallel (one sender per room at a
// time, GOMAXPROCS×8 goroutines), the "100 rooms" case beside
// BenchmarkSendMessage's one room.
func BenchmarkSendManyRooms(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d)
			owner := srv.Register(b, "owner", "pw")
			roomIDs := make([]string, 100)
			for i := range roomIDs {
				var room map[string]string
				owner.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
				roomIDs[i] = room["room_id"]
			}
			var n atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					room := roomIDs[i%int64(len(roomIDs))]
					if st := owner.Do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/m%d", room, i),
						map[string]string{"msgtype": "m.text", "body": "hello"}, nil); st != 200 {
						b.Errorf("send = %d", st)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkDeepHistory pages /messages back from deep inside a room of 100 000
// events (HONGYAN_BENCH_EVENTS overrides) and reports the Go heap in use after
// filling it.
func BenchmarkDeepHistory(b *testing.B) {
	events := 100_000
	if v := os.Getenv("HONGYAN_BENCH_EVENTS"); v != "" {
		fmt.Sscan(v, &events)
	}
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			srv := testserver.Start(b, d)
			owner := srv.Register(b, "owner", "pw")
			var room map[string]string
			owner.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
			ctx := context.Background()
			var deep rooms.Sent
			for i := 0; i < events; i++ {
				sent, err := srv.Rooms.Send(ctx, room["room_id"], rooms.Proto{Sender: owner.UserID, Type: "m.room.message",
					Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"event %d"}`, i))})
				if err != nil {
					b.Fatal(err)
				}
				if i == events/10 {
					deep = sent // 90 % of the history is after it
				}
			}
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			from := rooms.Token(deep.StreamPos)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var page struct {
					Chunk []any `json:"chunk"`
				}
				owner.MustDo("GET", "/_matrix/client/v3/rooms/"+room["room_id"]+"/messages?dir=b&limit=20&from="+from, nil, &page)
				if len(page.Chunk) != 20 {
					b.Fatalf("page of %d events; want 20", len(page.Chunk))
				}
			}
			// Reported last: ResetTimer drops metrics reported before it.
			b.ReportMetric(float64(m.HeapInuse)/(1<<20), "heap-MiB-after-fill")
		})
	}
}
