package mediahttp_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/outbound/outboundtest"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/homeserver/tlscert"
)

// counted is a test server on 127.0.0.2 (the one loopback address the servers
// under test allow-list) that counts the connections it accepts, so a test can
// check that every dial its guard counted went there and nowhere else.
type counted struct {
	*httptest.Server
	conns atomic.Int64
}

// serveCounted starts h on 127.0.0.2; with certFile/keyFile it serves TLS with
// that certificate.
func serveCounted(t *testing.T, h http.Handler, certFile, keyFile string) *counted {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &counted{Server: httptest.NewUnstartedServer(h)}
	c.Listener = ln
	c.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	if certFile == "" {
		c.Start()
	} else {
		cert, err := tlscert.LoadOrGenerate(certFile, keyFile, []string{"127.0.0.2"})
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		c.StartTLS()
	}
	t.Cleanup(c.Close)
	return c
}

// internalTargets are listeners on loopback that must never be connected to,
// and 10.0.0.1, which must never even be dialled.
type internalTargets struct {
	v4, v6 *outboundtest.Watched
}

func watchInternal(t *testing.T) internalTargets {
	return internalTargets{v4: outboundtest.Watch(t, "tcp4", "127.0.0.1"), v6: outboundtest.Watch(t, "tcp6", "::1")}
}

// hosts are the HOST:PORTs a request may be aimed at.
func (it internalTargets) hosts() []string {
	return []string{it.v4.Addr, it.v6.Addr, "10.0.0.1:80", net.JoinHostPort("localhost", strings.Split(it.v4.Addr, ":")[1])}
}

func (it internalTargets) assertUntouched(t *testing.T) {
	t.Helper()
	for _, w := range []*outboundtest.Watched{it.v4, it.v6} {
		if n := w.Accepted(t); n != 0 {
			t.Errorf("internal listener %s accepted %d connections; want 0", w.Addr, n)
		}
	}
}

// A URL preview aimed at loopback, 10.0.0.1 or [::1], directly, by a name that
// resolves there, or through a redirect from an allowed site, is refused before
// any connection: the listeners accept nothing, and every dial the preview
// guard counted went to the allowed site.
func TestURLPreviewRefusedBeforeConnect(t *testing.T) {
	targets := watchInternal(t)
	site := serveCounted(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := r.URL.Query().Get("to"); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<title>allowed</title>`)
	}), "", "")
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		guard := s.srv.PreviewGuard
		// The allowed site previews: the refusals below are the guard's.
		if r := do(t, alice, "GET", previewPath+url.QueryEscape(site.URL+"/page"), nil); r.status != 200 {
			t.Fatalf("preview of the allowed site = %d %s", r.status, r.body)
		}
		var urls []string
		for _, h := range targets.hosts() {
			urls = append(urls, "http://"+h+"/", site.URL+"/r?to="+url.QueryEscape("http://"+h+"/latest/meta-data"))
		}
		for _, target := range urls {
			dials, conns, refusals := guard.Dials(), site.conns.Load(), guard.Refusals()
			r := do(t, alice, "GET", previewPath+url.QueryEscape(target), nil)
			if r.status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Errorf("preview of %s = %d %s; want 403 M_FORBIDDEN", target, r.status, r.body)
			}
			if d, c := guard.Dials()-dials, site.conns.Load()-conns; d != c || guard.Refusals() == refusals {
				t.Errorf("preview of %s: guard dialled %d, the allowed site accepted %d, refusals %d → %d; want equal dials and a refusal",
					target, d, c, refusals, guard.Refusals())
			}
		}
		targets.assertUntouched(t)
	}, func(c *config.Config) { c.Media.PreviewAllow = "127.0.0.2/32" })
}

// notInsecure turns federation on without --federation-insecure: other servers'
// certificates are verified and internal addresses refused.
func notInsecure(c *config.Config) {
	testserver.Federated(c)
	c.Federation.InsecureSkipVerify = false
}

// Remote media on a server named by a loopback or private address, or by a
// name resolving to loopback, is refused without a connection.
func TestRemoteMediaRefusedBeforeConnect(t *testing.T) {
	targets := watchInternal(t)
	forEachSetup(t, func(t *testing.T, s *setup) {
		bob := s.srv.Register(t, "bob", "pw")
		guard := s.srv.FederationGuard
		origins := append(targets.hosts(), "10.0.0.1")
		for _, origin := range origins {
			refusals := guard.Refusals()
			r := do(t, bob, "GET", "/_matrix/client/v1/media/download/"+origin+"/abcdef", nil)
			if r.status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Errorf("download of mxc://%s/abcdef = %d %s; want 403 M_FORBIDDEN", origin, r.status, r.body)
			}
			if guard.Refusals() == refusals {
				t.Errorf("download of mxc://%s/abcdef: the guard refused nothing", origin)
			}
		}
		if guard.Dials() != 0 {
			t.Errorf("federation guard dialled %d times; want 0", guard.Dials())
		}
		targets.assertUntouched(t)
	}, notInsecure)
}

// A remote server whose media download answers with a Location (the multipart
// redirect of MSC3916) pointing inward cannot make us fetch from there; a
// Location on an allowed address is followed.
func TestRemoteMediaLocationRefused(t *testing.T) {
	targets := watchInternal(t)
	content := []byte("the real bytes")
	cdn := serveCounted(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(content)
	}), "", "")
	locations := map[string]string{"cdn": cdn.URL + "/ok"}
	for i, h := range targets.hosts() {
		locations[string(rune('a'+i))] = "http://" + h + "/secret"
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "remote.crt"), filepath.Join(dir, "remote.key")
	remote := serveCounted(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/media/download/")
		if id == "302" { // an HTTP redirect instead of the multipart Location
			http.Redirect(w, r, "http://"+targets.v4.Addr+"/secret", http.StatusFound)
			return
		}
		loc, ok := locations[id]
		if !ok {
			http.NotFound(w, r)
			return
		}
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		meta.Write([]byte("{}"))
		mw.CreatePart(textproto.MIMEHeader{"Location": {loc}})
		mw.Close()
	}), certFile, keyFile)
	origin := strings.TrimPrefix(remote.URL, "https://")
	forEachSetup(t, func(t *testing.T, s *setup) {
		bob := s.srv.Register(t, "bob", "pw")
		guard := s.srv.FederationGuard
		if r := do(t, bob, "GET", "/_matrix/client/v1/media/download/"+origin+"/cdn", nil); r.status != 200 || !bytes.Equal(r.body, content) {
			t.Fatalf("download through an allowed Location = %d %q; want 200 and the bytes", r.status, r.body)
		}
		for id, loc := range locations {
			if id == "cdn" {
				continue
			}
			// The remote and the CDN are shared by the parallel setups, so their
			// connection counts cannot be attributed to this one; the guard is this
			// server's own. The internal targets must accept nothing at all.
			refusals := guard.Refusals()
			r := do(t, bob, "GET", "/_matrix/client/v1/media/download/"+origin+"/"+id, nil)
			if r.status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Errorf("download whose Location is %s = %d %s; want 403 M_FORBIDDEN", loc, r.status, r.body)
			}
			if guard.Refusals() == refusals {
				t.Errorf("download whose Location is %s: the guard refused nothing", loc)
			}
		}
		if r := do(t, bob, "GET", "/_matrix/client/v1/media/download/"+origin+"/302", nil); r.status < 400 || r.status == 500 {
			t.Errorf("download answered by a redirect = %d %s; want an error other than 500", r.status, r.body)
		}
		targets.assertUntouched(t)
	}, notInsecure, func(c *config.Config) {
		c.Federation.AllowCIDRs = "127.0.0.2/32"
		c.Federation.CAFile = certFile
	})
}

// The unauthenticated legacy endpoints never make this server fetch another
// server's media, with or without a cut-off: an anonymous caller cannot make
// it connect anywhere.
func TestLegacyEndpointsDoNotFetchRemote(t *testing.T) {
	for _, d := range storagetest.Engines() {
		for _, cutoff := range []string{"", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)} {
			t.Run(string(d)+"/cutoff="+cutoff, func(t *testing.T) {
				t.Parallel()
				a := start(t, d, "fs", testserver.Federated).srv
				b := start(t, d, "fs", testserver.Federated, func(c *config.Config) { c.Media.LegacyCutoff = cutoff }).srv
				alice := a.Register(t, "alice", "pw")
				server, id := upload(t, alice, "text/plain", "notes.txt", []byte("hello"))
				anon := b.Client(t)
				for _, path := range []string{"/_matrix/media/v3/download/" + server + "/" + id,
					"/_matrix/media/v3/thumbnail/" + server + "/" + id + "?width=32&height=32"} {
					if r := do(t, anon, "GET", path, nil); r.status != 404 || r.errcode() != "M_NOT_FOUND" {
						t.Errorf("anonymous GET %s = %d %s; want 404 M_NOT_FOUND", path, r.status, r.body)
					}
				}
				if n := b.FederationGuard.Dials(); n != 0 {
					t.Errorf("anonymous legacy requests made the server dial %d times; want 0", n)
				}
				// The media is there to fetch for a signed-in user.
				bob := b.Register(t, "bob", "pw")
				if r := do(t, bob, "GET", "/_matrix/client/v1/media/download/"+server+"/"+id, nil); r.status != 200 {
					t.Errorf("authenticated download = %d %s", r.status, r.body)
				}
			})
		}
	}
}
