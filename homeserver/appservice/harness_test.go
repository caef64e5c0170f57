package appservice_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	masapp "maunium.net/go/mautrix/appservice"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// bridge is a real application service written with mautrix-go's appservice
// package, served on its own loopback listener, with a gate in front of it
// that the fault tests use to take it down or lose its answers.
type bridge struct {
	AS  *masapp.AppService
	URL string
	// file is its registration file.
	file string

	// down refuses every connection (accepted, then closed unanswered).
	down atomic.Bool
	// refused counts connections refused while down; calls every request.
	refused, calls atomic.Int64
	// loseAnswers is how many more transactions are processed but answered by
	// closing the connection, as a network that loses the answer would.
	loseAnswers atomic.Int64

	// onUserQuery, if set, answers GET /users/{userId} (the homeserver asking
	// whether the service hosts a user): true registers nothing itself, it only
	// answers 200; the hook does the registering.
	onUserQuery func(userID string) bool

	mu   sync.Mutex
	txns []seenTxn // every PUT /transactions attempt, in arrival order; mu
}

type seenTxn struct {
	ID, Auth string
	Body     []byte
}

// forEachEngine runs fn on both databases, each with its own server.
func forEachEngine(t *testing.T, fn func(t *testing.T, d storage.Dialect)) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) { fn(t, d) })
	}
}

// newBridge starts the service's listener and writes its registration file;
// extra is appended to the YAML (more namespaces, flags).
func newBridge(t testing.TB, id, senderLocalpart string, extra string) *bridge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bridge{URL: "http://" + ln.Addr().String()}
	reg := fmt.Sprintf(`id: %s
url: %s
as_token: as-%s-secret
hs_token: hs-%s-secret
sender_localpart: %s
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@%s_.*:localhost'
  aliases:
    - exclusive: true
      regex: '#%s_.*:localhost'
%s`, id, b.URL, id, id, senderLocalpart, id, id, extra)
	b.file = filepath.Join(t.TempDir(), id+".yaml")
	if err := os.WriteFile(b.file, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	b.AS = masapp.Create()
	b.AS.Log = zerolog.Nop()
	b.AS.HomeserverDomain = "localhost"
	b.AS.Registration, err = masapp.LoadRegistration(b.file)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return b
}

// connect points the service's client side at the homeserver.
func (b *bridge) connect(t testing.TB, srv *testserver.Server) {
	t.Helper()
	if err := b.AS.SetHomeserverURL(srv.URL); err != nil {
		t.Fatal(err)
	}
}

// withBridges is the server option that registers the bridges' files.
func withBridges(bs ...*bridge) testserver.Option {
	return func(c *config.Config) {
		for _, b := range bs {
			c.AppServiceConfigFiles = append(c.AppServiceConfigFiles, b.file)
		}
		c.Federation.RetryMax = 300 * time.Millisecond // the sender's backoff cap too
	}
}

func (b *bridge) serve(w http.ResponseWriter, r *http.Request) {
	b.calls.Add(1)
	if b.down.Load() {
		b.refused.Add(1)
		hang(w)
		return
	}
	if userID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/users/"); ok && b.onUserQuery != nil {
		if b.onUserQuery(userID) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{}"))
		} else {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no such user"}`))
		}
		return
	}
	if txnID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"); ok && r.Method == http.MethodPut {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		b.mu.Lock()
		b.txns = append(b.txns, seenTxn{ID: txnID, Auth: r.Header.Get("Authorization"), Body: body})
		b.mu.Unlock()
		if b.loseAnswers.Load() > 0 {
			b.loseAnswers.Add(-1)
			rec := httptest.NewRecorder()
			b.AS.Router.ServeHTTP(rec, r) // processed…
			hang(w)                       // …but the answer never arrives
			return
		}
	}
	b.AS.Router.ServeHTTP(w, r)
}

// hang closes the connection without an answer.
func hang(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

// seen returns a copy of the transaction attempts so far.
func (b *bridge) seen() []seenTxn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenTxn(nil), b.txns...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
