package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// benchEngine is the engine a benchmark runs on: the first configured one
// (HONGYAN_TEST_DATABASES=postgres for PostgreSQL).
func benchEngine() storage.Dialect { return storagetest.Engines()[0] }

// BenchmarkInboundSend measures /send with 50 PDUs per transaction: B's user writes
// into a room on A, each event signed by B and built on the one before, as a busy
// remote server would send them. One op is one transaction.
func BenchmarkInboundSend(b *testing.B) {
	ctx := context.Background()
	a := testserver.Start(b, benchEngine(), testserver.Federated)
	srvB := testserver.Start(b, benchEngine(), testserver.Federated)
	alice := a.Register(b, "alice", "pw")
	bob := srvB.Register(b, "bob", "pw")
	var created map[string]string
	alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
	room := created["room_id"]
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)

	var state []event
	alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state", nil, &state)
	var auth []string
	for _, ev := range state {
		if ev.Type == "m.room.create" || ev.Type == "m.room.power_levels" || (ev.Type == "m.room.member" && ev.StateKey == bob.UserID) {
			auth = append(auth, ev.EventID)
		}
	}
	var extremities []string
	for len(extremities) == 0 || len(auth) < 3 {
		var err error
		if extremities, err = a.Rooms.ForwardExtremities(ctx, room); err != nil {
			b.Fatal(err)
		}
	}
	impl, _ := gomatrixserverlib.GetRoomVersion("10")
	client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(srvB.Config.ServerName),
		KeyID: gomatrixserverlib.KeyID(srvB.Key.ID), PrivateKey: srvB.Key.PrivateKey}}, fclient.WithSkipVerify(true))

	// Build all transactions first: signing is the sender's cost, not A's.
	prev := extremities
	depth := int64(100)
	txns := make([]gomatrixserverlib.Transaction, b.N)
	for i := range txns {
		pdus := make([]json.RawMessage, 50)
		for j := range pdus {
			depth++
			proto := gomatrixserverlib.ProtoEvent{SenderID: bob.UserID, RoomID: room, Type: "m.room.message",
				Content:    spec.RawJSON(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d.%d"}`, i, j)),
				PrevEvents: prev, AuthEvents: auth, Depth: depth}
			ev, err := impl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(srvB.Config.ServerName),
				gomatrixserverlib.KeyID(srvB.Key.ID), srvB.Key.PrivateKey)
			if err != nil {
				b.Fatal(err)
			}
			pdus[j] = ev.JSON()
			prev = []string{ev.EventID()}
		}
		txns[i] = gomatrixserverlib.Transaction{TransactionID: gomatrixserverlib.TransactionID(fmt.Sprintf("bench-%d", i)),
			Origin: spec.ServerName(srvB.Config.ServerName), Destination: spec.ServerName(a.Config.ServerName),
			OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus}
	}
	b.ResetTimer()
	start := time.Now()
	for i := range txns {
		res, err := client.SendTransaction(ctx, txns[i])
		if err != nil {
			b.Fatal(err)
		}
		for id, r := range res.PDUs {
			if r.Error != "" {
				b.Fatalf("PDU %s refused: %s", id, r.Error)
			}
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "txns/s")
	b.ReportMetric(float64(50*b.N)/elapsed.Seconds(), "pdus/s")
}

// BenchmarkRemoteJoin10k measures joining, from server B, a room on server A with
// 10 000 joined members: time for the whole join (make_join, send_join with the
// room's state and auth chain, verification of every event, import), and the peak
// Go heap growth during it. Both servers run in this process, so the heap figure
// covers A answering as well as B joining. Run with -benchtime=1x;
// HONGYAN_BENCH_PARTIAL=1 joins with partial state and also reports the time until
// the whole state has arrived.
func BenchmarkRemoteJoin10k(b *testing.B) {
	ctx := context.Background()
	const members = 10_000
	a := testserver.Start(b, benchEngine(), testserver.Federated)
	alice := a.Register(b, "alice", "pw")
	var created map[string]string
	alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
	room := created["room_id"]
	for i := range members - 1 {
		user := fmt.Sprintf("@member%05d:%s", i, a.Config.ServerName)
		if _, err := a.Rooms.SetMembership(ctx, room, rooms.Membership{Sender: user, Target: user, Membership: "join"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var total time.Duration
	var peak uint64
	partial := os.Getenv("HONGYAN_BENCH_PARTIAL") != ""
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		srvB := testserver.Start(b, benchEngine(), testserver.Federated, func(c *config.Config) { c.Federation.PartialStateJoins = partial })
		bob := srvB.Register(b, "bob", "pw")
		b.StartTimer()
		start := time.Now()
		took, grew := heapDuring(func() {
			bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		})
		b.StopTimer()
		total += took
		peak = max(peak, grew)
		var joined struct {
			Joined map[string]any `json:"joined"`
		}
		// With partial state the members arrive in the background: wait for them.
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
			joined.Joined = nil
			bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &joined)
			if len(joined.Joined) == members+1 {
				break
			}
			if !partial || time.Now().After(deadline) {
				b.Fatalf("B sees %d joined members; want %d", len(joined.Joined), members+1)
			}
		}
		if partial {
			b.ReportMetric(time.Since(start).Seconds(), "s-until-complete")
		}
		srvB.Stop()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/join")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// heapDuring runs fn and returns how long it took and how far the Go heap grew
// above where it stood before (sampled every 20 ms).
func heapDuring(fn func()) (time.Duration, uint64) {
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var top atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > top.Load() {
				top.Store(m.HeapInuse)
			}
		}
	}()
	start := time.Now()
	fn()
	took := time.Since(start)
	close(done)
	if top.Load() <= base.HeapInuse {
		return took, 0
	}
	return took, top.Load() - base.HeapInuse
}
