// Package testserver starts a whole Hongyan in-process on a random loopback port for
// end-to-end tests, on SQLite or PostgreSQL, with a small Matrix client to drive it.
package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver"
	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Server is a running test homeserver.
type Server struct {
	*homeserver.Server
	// URL is the client API's base URL, http://127.0.0.1:PORT.
	URL string
	// NativeAddr is the native protocol's TCP listener, tcp://127.0.0.1:PORT;
	// NativeTLSAddr its TLS listener (tls://…) when configured; NativeWS its
	// WebSocket URL.
	NativeAddr, NativeTLSAddr, NativeWS string
	// FederationURL is the federation listener's https://127.0.0.1:PORT when the
	// server runs with Federated.
	FederationURL string
	// MetricsURL is http://127.0.0.1:PORT/metrics when metrics.listen is set.
	MetricsURL string

	stop func()

	// The sockets bound at Start and kept until the test ends; nil when the
	// configuration has no such listener.
	client, native, nativeTLS, federation, metrics *socket

	holdMu  sync.Mutex
	holds   map[string]chan struct{} // federation path fragment → closed on release
	watches []*watch                 // FederationAnswered calls not yet answered
	stopped chan struct{}            // closed when the running server stops
}

// HoldFederation holds back every federation request to this server whose path
// contains fragment until release is called (or the test ends): how a test keeps
// a server from answering, say, /state_ids while the rest of federation works.
func (srv *Server) HoldFederation(t testing.TB, fragment string) (release func()) {
	srv.holdMu.Lock()
	defer srv.holdMu.Unlock()
	if srv.holds == nil {
		srv.holds = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	srv.holds[fragment] = ch
	var once sync.Once
	release = func() {
		once.Do(func() {
			srv.holdMu.Lock()
			delete(srv.holds, fragment)
			srv.holdMu.Unlock()
			close(ch)
		})
	}
	t.Cleanup(release)
	return release
}

// FederationAnswered returns a channel closed once this server has answered a
// federation request whose path contains fragment and whose body contains needle
// (a /send/ transaction carrying an event ID, say). It is the positive signal a
// negative check waits for: once the server has answered the transaction that
// carried X, "X was not stored" is a fact, not a guess about how long to sleep.
// Call it before the request can be sent.
func (srv *Server) FederationAnswered(fragment, needle string) <-chan struct{} {
	srv.holdMu.Lock()
	defer srv.holdMu.Unlock()
	w := &watch{fragment: fragment, needle: []byte(needle), done: make(chan struct{})}
	srv.watches = append(srv.watches, w)
	return w.done
}

// watch is one FederationAnswered call waiting for its request.
type watch struct {
	fragment string
	needle   []byte
	done     chan struct{} // closed once answered, and the watch dropped
}

func (srv *Server) holdBack(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.holdMu.Lock()
		var wait []chan struct{}
		for fragment, ch := range srv.holds {
			if strings.Contains(r.URL.Path, fragment) {
				wait = append(wait, ch)
			}
		}
		watching := len(srv.watches) > 0
		stopped := srv.stopped
		srv.holdMu.Unlock()
		for _, ch := range wait {
			select {
			case <-ch:
			case <-r.Context().Done():
				return
			case <-stopped: // as a server going down would
				http.Error(w, "stopped", http.StatusServiceUnavailable)
				return
			}
		}
		if !watching {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
		srv.holdMu.Lock()
		defer srv.holdMu.Unlock()
		kept := srv.watches[:0]
		for _, wt := range srv.watches {
			if strings.Contains(r.URL.Path, wt.fragment) && bytes.Contains(body, wt.needle) {
				close(wt.done)
				continue
			}
			kept = append(kept, wt)
		}
		srv.watches = kept
	})
}

// Option adjusts the configuration before the server starts.
type Option func(*config.Config)

// Start runs a server with a fresh database of engine d until the test ends. Rate
// limiting is off and password hashing cheap unless options say otherwise.
//
// Every listener is bound on 127.0.0.1:0 before the server is built, and its socket
// is kept until the test ends (across Stop and Resume): no port is ever picked,
// released and bound again, so parallel tests cannot take each other's ports.
func Start(t testing.TB, d storage.Dialect, opts ...Option) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.ServerName = "localhost"
	cfg.RateLimit.Enabled = false
	cfg.Database.URL = storagetest.DSN(t, d)
	cfg.Auth.PasswordHashMemoryKiB, cfg.Auth.PasswordHashIterations = 64, 1
	cfg.Native.Listen = "127.0.0.1:0"
	for _, o := range opts {
		o(&cfg)
	}
	srv := &Server{}
	srv.bind(t, &cfg)
	srv.start(t, cfg)
	t.Cleanup(func() { srv.stop() }) // the server running at the end, after any Restart
	return srv
}

// bind binds every listener cfg names, keeps the sockets for the test's life, and
// writes their bound addresses back into cfg. A server named host:0 (Federated) is
// named after its federation port, which is known only now.
func (srv *Server) bind(t testing.TB, cfg *config.Config) {
	t.Helper()
	srv.client = listen(t, cfg.Listen)
	cfg.Listen = srv.client.addr()
	if l := cfg.Native.Listen; l != "" && l != "off" {
		srv.native = listen(t, l)
		cfg.Native.Listen = srv.native.addr()
	}
	if l := cfg.Native.TLSListen; l != "" {
		srv.nativeTLS = listen(t, l)
		cfg.Native.TLSListen = srv.nativeTLS.addr()
	}
	if l := cfg.Metrics.Listen; l != "" {
		srv.metrics = listen(t, l)
		cfg.Metrics.Listen = srv.metrics.addr()
	}
	if l := cfg.Federation.Listen; l != "" {
		srv.federation = listen(t, l)
		cfg.Federation.Listen = srv.federation.addr()
		if host, port, err := net.SplitHostPort(cfg.ServerName); err == nil && port == "0" {
			cfg.ServerName = net.JoinHostPort(host, strconv.Itoa(srv.federation.ln.Addr().(*net.TCPAddr).Port))
		}
	}
}

// start builds the server on cfg and serves it on the sockets bind kept.
func (srv *Server) start(t testing.TB, cfg config.Config) {
	t.Helper()
	stopped := make(chan struct{})
	srv.holdMu.Lock()
	srv.stopped = stopped
	srv.holdMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	hs, err := homeserver.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start homeserver: %v", err)
	}
	hs.FederationMiddleware = srv.holdBack
	srv.NativeAddr, srv.NativeTLSAddr, srv.FederationURL, srv.MetricsURL = "", "", "", ""
	if srv.native != nil {
		srv.NativeAddr = hs.ServeNative(ctx, srv.native.open())
	}
	if srv.nativeTLS != nil {
		srv.NativeTLSAddr, err = hs.ServeNativeTLS(ctx, srv.nativeTLS.open())
	}
	if err == nil && srv.federation != nil {
		srv.FederationURL, err = hs.ServeFederation(ctx, srv.federation.open())
	}
	if err == nil && srv.metrics != nil {
		srv.MetricsURL, err = hs.ServeMetrics(ctx, srv.metrics.open())
	}
	if err != nil {
		cancel()
		hs.Close()
		t.Fatalf("native, federation and metrics listeners: %v", err)
	}
	ln := srv.client.open()
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ctx, ln) }()
	srv.Server, srv.URL = hs, "http://"+ln.Addr().String()
	var once sync.Once
	srv.stop = func() {
		once.Do(func() {
			close(stopped)
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			hs.Close()
		})
	}
	srv.NativeWS = "ws://" + ln.Addr().String() + "/_hongyan/native"
}

// Restart stops the server and starts it again on the same data, database and
// addresses, as a process restart would.
func (srv *Server) Restart(t testing.TB) {
	t.Helper()
	srv.Stop()
	srv.Resume(t)
}

// Stop stops the server as a crash or shutdown would; Resume starts it again. While
// it is stopped its sockets stay bound and turn every connection away at once.
func (srv *Server) Stop() { srv.stop() }

// Resume starts a stopped server again on the same data, database and sockets.
func (srv *Server) Resume(t testing.TB) {
	t.Helper()
	srv.start(t, srv.Config)
}

// FederationTurnedAway counts the federation connections turned away while the
// server was stopped: the positive signal that another server tried to reach it
// while it was down.
func (srv *Server) FederationTurnedAway() int64 {
	if srv.federation == nil {
		return 0
	}
	return srv.federation.turnedAway.Load()
}

// Federated turns federation on: a TLS listener on a loopback port Start binds, the
// server named localhost:PORT after it (so other servers reach it with no DNS),
// other servers' self-signed certificates accepted, and retries to a server that is
// down at most two seconds apart. The name is localhost:0 until Start binds the port.
var Federated Option = func(c *config.Config) {
	c.Federation.Listen = "127.0.0.1:0"
	c.ServerName = "localhost:0"
	c.Federation.InsecureSkipVerify = true
	c.Federation.RetryMax = 2 * time.Second
}

// ProductionHashing restores the production argon2id cost, which Start lowers so
// that tests creating many accounts stay quick.
var ProductionHashing Option = func(c *config.Config) {
	d := config.Default()
	c.Auth.PasswordHashMemoryKiB, c.Auth.PasswordHashIterations = d.Auth.PasswordHashMemoryKiB, d.Auth.PasswordHashIterations
}

// Client is a minimal Matrix client for tests.
type Client struct {
	t       testing.TB
	URL     string
	Token   string
	UserID  string
	Device  string
	HTTP    *http.Client
	Session users.Session
}

// NewClient returns an anonymous client of any server at baseURL (another
// implementation, in interop tests).
func NewClient(t testing.TB, baseURL string) *Client {
	return &Client{t: t, URL: baseURL, HTTP: http.DefaultClient}
}

// Client returns an anonymous client of the server.
func (s *Server) Client(t testing.TB) *Client {
	return &Client{t: t, URL: s.URL, HTTP: http.DefaultClient}
}

// Register creates a user with m.login.dummy and returns a logged-in client.
func (s *Server) Register(t testing.TB, localpart, password string) *Client {
	t.Helper()
	c := s.Client(t)
	var sess users.Session
	status := c.Do("POST", "/_matrix/client/v3/register", map[string]any{
		"username": localpart, "password": password, "auth": map[string]string{"type": "m.login.dummy"},
	}, &sess)
	if status != 200 {
		t.Fatalf("register %s: status %d", localpart, status)
	}
	c.Token, c.UserID, c.Device, c.Session = sess.AccessToken, sess.UserID, sess.DeviceID, sess
	return c
}

// Do sends a request with body encoded as JSON (a []byte or string is sent raw) and
// decodes the response into out (if not nil). It returns the status.
func (c *Client) Do(method, path string, body, out any) int {
	c.t.Helper()
	status, data := c.Raw(method, path, body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return status
}

// Raw sends a request and returns the status and body bytes.
func (c *Client) Raw(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = bytes.NewReader([]byte(b))
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, c.URL+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, data
}

// MustDo is Do that fails the test unless the status is 200.
func (c *Client) MustDo(method, path string, body, out any) {
	c.t.Helper()
	if status, data := c.Raw(method, path, body); status != 200 {
		c.t.Fatalf("%s %s = %d %s; want 200", method, path, status, data)
	} else if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
}

// String describes the client for failure messages.
func (c *Client) String() string { return fmt.Sprintf("client(%s)", c.UserID) }

// WithToken returns a copy of the client that sends token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.Token = token
	return &cp
}

// socket is a listening socket that lives as long as the test, across Stop and
// Resume. Each run of the server accepts through a view of it (open); closing the
// view, as a stopping server does, leaves the socket bound, so a resumed server is
// reachable at the same address without binding again. While no view is open,
// connections are accepted and closed at once, as a server that is down would
// turn them away.
type socket struct {
	ln         net.Listener
	turnedAway atomic.Int64 // connections closed because no view was open

	mu  sync.Mutex
	cur *view // the open view, nil while the server is stopped; mu held
}

// listen binds address (127.0.0.1:0 in practice) for the rest of the test.
func listen(t testing.TB, address string) *socket {
	t.Helper()
	ln, err := net.Listen("tcp", address)
	if err != nil {
		t.Fatalf("listen %s: %v", address, err)
	}
	s := &socket{ln: ln}
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		s.pump()
	}()
	t.Cleanup(func() {
		ln.Close()
		<-pumped
	})
	return s
}

func (s *socket) addr() string { return s.ln.Addr().String() }

// pump accepts every connection and hands it to the open view, or turns it away.
func (s *socket) pump() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond) // a transient accept error (EMFILE, ECONNABORTED): retry
			continue
		}
		s.mu.Lock()
		v := s.cur
		s.mu.Unlock()
		if v == nil {
			s.turnedAway.Add(1)
			c.Close()
			continue
		}
		select {
		case v.conns <- c:
		case <-v.done:
			s.turnedAway.Add(1)
			c.Close()
		}
	}
}

// open returns a listener for one run of the server.
func (s *socket) open() net.Listener {
	v := &view{s: s, conns: make(chan net.Conn), done: make(chan struct{})}
	s.mu.Lock()
	s.cur = v
	s.mu.Unlock()
	return v
}

// view is one server run's listener on a socket; Close ends the run's accepting,
// not the socket.
type view struct {
	s     *socket
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (v *view) Accept() (net.Conn, error) {
	select {
	case c := <-v.conns:
		return c, nil
	case <-v.done:
		return nil, net.ErrClosed
	}
}

func (v *view) Close() error {
	v.once.Do(func() {
		close(v.done)
		v.s.mu.Lock()
		if v.s.cur == v {
			v.s.cur = nil
		}
		v.s.mu.Unlock()
	})
	return nil
}

func (v *view) Addr() net.Addr { return v.s.ln.Addr() }
