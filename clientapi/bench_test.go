package clientapi_test

import (
	"fmt"
	"sync/atomic"
	"testing"

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
