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
	"strings"
	"sync"
	"syscall"
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

	holdMu  sync.Mutex
	holds   map[string]chan struct{} // federation path fragment → closed on release
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

func (srv *Server) holdBack(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.holdMu.Lock()
		var wait []chan struct{}
		for fragment, ch := range srv.holds {
			if strings.Contains(r.URL.Path, fragment) {
				wait = append(wait, ch)
			}
		}
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
		next.ServeHTTP(w, r)
	})
}

// Option adjusts the configuration before the server starts.
type Option func(*config.Config)

// Start runs a server with a fresh database of engine d until the test ends. Rate
// limiting is off and password hashing cheap unless options say otherwise.
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
	srv := &Server{}
	for attempt := 1; ; attempt++ {
		try := cfg
		for _, o := range opts {
			o(&try)
		}
		err := srv.start(t, try)
		if err == nil {
			break
		}
		// A port picked free (Federated) may be taken by another test before
		// the server binds it: pick again.
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { srv.stop() }) // the server running at the end, after any Restart
	return srv
}

// start starts the server; a listener that cannot bind is returned as an error,
// anything else fails the test.
func (srv *Server) start(t testing.TB, cfg config.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	stopped := make(chan struct{})
	srv.holdMu.Lock()
	srv.stopped = stopped
	srv.holdMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	hs, err := homeserver.New(ctx, cfg)
	if err != nil {
		cancel()
		ln.Close()
		t.Fatalf("start homeserver: %v", err)
	}
	hs.FederationMiddleware = srv.holdBack
	native, err := hs.ListenNative(ctx)
	if err == nil {
		srv.FederationURL, err = hs.ListenFederation(ctx)
	}
	if err == nil {
		srv.MetricsURL, err = hs.ListenMetrics(ctx)
	}
	if err != nil {
		cancel()
		ln.Close()
		hs.Close()
		return fmt.Errorf("native, federation and metrics listeners: %w", err)
	}
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
	for _, a := range native {
		if strings.HasPrefix(a, "tls://") {
			srv.NativeTLSAddr = a
		} else {
			srv.NativeAddr = a
		}
	}
	srv.NativeWS = "ws://" + ln.Addr().String() + "/_hongyan/native"
	return nil
}

// Restart stops the server and starts it again on the same data, database and
// addresses, as a process restart would.
func (srv *Server) Restart(t testing.TB) {
	t.Helper()
	srv.Stop()
	srv.Resume(t)
}

// Stop stops the server as a crash or shutdown would; Resume starts it again.
func (srv *Server) Stop() { srv.stop() }

// Resume starts a stopped server again on the same data, database and addresses.
func (srv *Server) Resume(t testing.TB) {
	t.Helper()
	cfg := srv.Config
	cfg.Listen = strings.TrimPrefix(srv.URL, "http://")
	cfg.Native.Listen = strings.TrimPrefix(srv.NativeAddr, "tcp://")
	if srv.NativeTLSAddr != "" {
		cfg.Native.TLSListen = strings.TrimPrefix(srv.NativeTLSAddr, "tls://")
	}
	if srv.MetricsURL != "" {
		cfg.Metrics.Listen = strings.TrimSuffix(strings.TrimPrefix(srv.MetricsURL, "http://"), "/metrics")
	}
	if err := srv.start(t, cfg); err != nil {
		t.Fatal(err)
	}
}

// Federated turns federation on: a TLS listener on a free loopback port, the server
// named localhost:PORT after it (so other servers reach it with no DNS), other
// servers' self-signed certificates accepted, and retries to a server that is down
// at most two seconds apart.
var Federated Option = func(c *config.Config) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c.Federation.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	c.ServerName = fmt.Sprintf("localhost:%d", port)
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
