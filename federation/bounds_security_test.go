package federation

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestRemotelyKeyedMapsStayBounded: the in-memory maps whose keys other servers
// choose stay within their bound however many distinct keys they are fed.
func TestRemotelyKeyedMapsStayBounded(t *testing.T) {
	t.Run("signing keys remembered", func(t *testing.T) {
		k := &keyStore{}
		for i := range 3 * maxRememberedKeys {
			req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(fmt.Sprintf("s%d.example", i)), KeyID: "ed25519:a"}
			k.remember(req, gomatrixserverlib.PublicKeyLookupResult{})
			if n := len(k.mem); n > maxRememberedKeys {
				t.Fatalf("after %d servers' keys, len(keyStore.mem) = %d; want at most %d", i+1, n, maxRememberedKeys)
			}
		}
	})
	t.Run("servers joined through", func(t *testing.T) {
		var r recentJoins
		now := time.Now()
		for i := range 3 * maxRecentJoins {
			r.add(fmt.Sprintf("s%d.example", i), now)
			if n := len(r.until); n > maxRecentJoins {
				t.Fatalf("after %d joins, len(recentJoins.until) = %d; want at most %d", i+1, n, maxRecentJoins)
			}
		}
		if last := fmt.Sprintf("s%d.example", 3*maxRecentJoins-1); !r.has(last, now) || r.has(last, now.Add(joinGrace)) {
			t.Errorf("recentJoins.has(%s) = %v now, %v after joinGrace; want true, false", last, r.has(last, now), r.has(last, now.Add(joinGrace)))
		}
	})
	// Destinations: one worker goroutine each while there is work; idle ones
	// leave, so a burst of servers named once does not stay.
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		snd := &sender{s: &Service{deps: Deps{DB: db}, log: slog.Default()}, node: "n", ctx: ctx, cancel: cancel,
			dests: map[string]*destination{}, idleAfter: time.Nanosecond}
		defer func() { snd.cancel(); snd.wg.Wait() }()
		for i := range 300 {
			snd.kick(fmt.Sprintf("d%d.example", i))
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			snd.mu.Lock()
			n := len(snd.dests)
			snd.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("idle destinations still held after 30 s: %d; want 0", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The workers have ended, not only left the map: Wait returns.
		done := make(chan struct{})
		go func() { snd.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("idle destination workers still running")
		}
		// And their leases are given up, for another node to take at once.
		var leases int
		if err := db.QueryRow(context.Background(), `SELECT COUNT(*) FROM federation_leases WHERE node = 'n'`).Scan(&leases); err != nil {
			t.Fatal(err)
		}
		if leases != 0 {
			t.Errorf("leases held by the retired workers' node = %d; want 0", leases)
		}
	})
}
