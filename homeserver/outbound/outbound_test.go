package outbound_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/outbound/outboundtest"
)

func prefixes(t *testing.T, list string) []netip.Prefix {
	t.Helper()
	p, err := outbound.ParsePrefixes(list)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAllowed classifies addresses under the three kinds of policy: public
// only, internal (--federation-insecure) and an allow-list.
func TestAllowed(t *testing.T) {
	allow := prefixes(t, "10.1.0.0/16, 127.0.0.2, fd00:1::/32")
	for _, tc := range []struct {
		ip                       string
		public, internal, listed bool
	}{
		// IPv4
		{"8.8.8.8", true, true, true},
		{"1.1.1.1", true, true, true},
		{"127.0.0.1", false, true, false},
		{"127.0.0.2", false, true, true},
		{"10.0.0.1", false, true, false},
		{"10.1.2.3", false, true, true},
		{"172.16.5.4", false, true, false},
		{"192.168.1.1", false, true, false},
		{"169.254.169.254", false, false, false},
		{"100.64.0.1", false, true, false},
		{"198.18.0.1", false, true, false},
		{"192.0.0.8", false, true, false},
		{"0.0.0.0", false, false, false},
		{"0.1.2.3", false, false, false},
		{"255.255.255.255", false, false, false},
		{"240.0.0.1", false, false, false},
		{"224.0.0.1", false, false, false},
		{"239.255.255.250", false, false, false},
		{"192.0.2.1", false, false, false},
		{"203.0.113.7", false, false, false},
		// IPv6
		{"2606:4700:4700::1111", true, true, true},
		{"2a00:1450:4001::200e", true, true, true},
		{"::1", false, true, false},
		{"::", false, false, false},
		{"fe80::1", false, false, false},
		{"fe80::1%eth0", false, false, false},
		{"fc00::1", false, true, false},
		{"fd12:3456::1", false, true, false},
		{"fd00:1::5", false, true, true},
		{"ff02::1", false, false, false},
		{"ff0e::1", false, false, false},
		{"2001:db8::1", false, false, false},
		{"fec0::1", false, false, false},
		{"64:ff9b::a00:1", false, true, false}, // NAT64 of 10.0.0.1
		{"64:ff9b::808:808", false, true, false},
		{"2002:a00:1::1", false, true, false}, // 6to4 of 10.0.0.1
		{"2001:0:4136:e378::1", false, true, false},
		{"::127.0.0.1", false, true, false}, // IPv4-compatible
		// IPv4-mapped IPv6: judged as the IPv4 address
		{"::ffff:127.0.0.1", false, true, false},
		{"::ffff:10.0.0.1", false, true, false},
		{"::ffff:10.1.2.3", false, true, true},
		{"::ffff:169.254.169.254", false, false, false},
		{"::ffff:0.0.0.0", false, false, false},
		{"::ffff:8.8.8.8", true, true, true},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if got := outbound.Allowed(ip, nil, false); got != tc.public {
			t.Errorf("Allowed(%s, public only) = %v; want %v", tc.ip, got, tc.public)
		}
		if got := outbound.Allowed(ip, nil, true); got != tc.internal {
			t.Errorf("Allowed(%s, internal) = %v; want %v", tc.ip, got, tc.internal)
		}
		if got := outbound.Allowed(ip, allow, false); got != tc.listed {
			t.Errorf("Allowed(%s, %v) = %v; want %v", tc.ip, allow, got, tc.listed)
		}
		if err := outbound.Trusted("push").Check(ip); err != nil {
			t.Errorf("Trusted.Check(%s) = %v; want nil", tc.ip, err)
		}
	}
	if outbound.Allowed(netip.Addr{}, nil, true) {
		t.Error("Allowed(invalid address) = true")
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := outbound.ParsePrefixes(" 10.0.0.0/8,,::1 ,192.168.1.7/16")
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("192.168.0.0/16")}
	if err != nil || len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("ParsePrefixes = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.org", "10.0.0.0/8,nope"} {
		if _, err := outbound.ParsePrefixes(bad); err == nil {
			t.Errorf("ParsePrefixes(%q) = nil error", bad)
		}
	}
}

// TestDialRefusedBeforeConnect: a refused address is never connected to — the
// listener accepts nothing and the guard counts no dial — while an allowed one
// is. 10.0.0.1 is only ever refused, never dialled.
func TestDialRefusedBeforeConnect(t *testing.T) {
	v4 := outboundtest.Watch(t, "tcp4", "127.0.0.1")
	v6 := outboundtest.Watch(t, "tcp6", "::1")
	for _, tc := range []struct {
		name, addr string
		watched    *outboundtest.Watched
	}{
		{"loopback", v4.Addr, v4},
		{"loopback by name", net.JoinHostPort("localhost", strconv.Itoa(v4.Port())), v4},
		{"IPv6 loopback", v6.Addr, v6},
		{"private", "10.0.0.1:8448", nil},
		{"metadata", "169.254.169.254:80", nil},
		{"mapped loopback", net.JoinHostPort("::ffff:127.0.0.1", strconv.Itoa(v4.Port())), v4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := outbound.New(outbound.Policy{Purpose: "test"})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := g.DialContext(ctx, "tcp", tc.addr)
			if err == nil {
				c.Close()
			}
			if !errors.Is(err, outbound.ErrRefused) {
				t.Errorf("DialContext(%s) = %v; want ErrRefused", tc.addr, err)
			}
			if g.Dials() != 0 || g.Refusals() == 0 {
				t.Errorf("DialContext(%s): %d dials, %d refusals; want 0 and some", tc.addr, g.Dials(), g.Refusals())
			}
			if tc.watched != nil {
				if n := tc.watched.Accepted(t); n != 0 {
					t.Errorf("DialContext(%s): listener accepted %d connections; want 0", tc.addr, n)
				}
			}
		})
	}
	t.Run("allow-listed", func(t *testing.T) {
		g := outbound.New(outbound.Policy{Purpose: "test", Allow: prefixes(t, "127.0.0.1/32")})
		c, err := g.DialContext(context.Background(), "tcp", v4.Addr)
		if err != nil {
			t.Fatalf("DialContext(%s) allow-listed = %v", v4.Addr, err)
		}
		c.Close()
		if n := v4.Accepted(t); n != 1 || g.Dials() != 1 {
			t.Errorf("allow-listed dial: listener accepted %d, guard dialled %d; want 1 and 1", n, g.Dials())
		}
	})
	t.Run("internal", func(t *testing.T) {
		g := outbound.New(outbound.Policy{Purpose: "test", Internal: true})
		c, err := g.DialContext(context.Background(), "tcp", v6.Addr)
		if err != nil {
			t.Fatalf("DialContext(%s) internal = %v", v6.Addr, err)
		}
		c.Close()
		if _, err := g.DialContext(context.Background(), "tcp", "169.254.169.254:80"); !errors.Is(err, outbound.ErrRefused) {
			t.Errorf("internal DialContext(169.254.169.254) = %v; want ErrRefused", err)
		}
	})
}

// TestClientRedirects: every hop of a redirect is checked again; other schemes
// and long chains are refused.
func TestClientRedirects(t *testing.T) {
	target := outboundtest.Watch(t, "tcp4", "127.0.0.1")
	target6 := outboundtest.Watch(t, "tcp6", "::1")
	// The site itself lives on 127.0.0.2, the one address the guard allows.
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	site := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/ok":
			io.WriteString(w, "ok")
		default:
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		}
	}))
	site.Listener = ln
	site.Start()
	t.Cleanup(site.Close)
	g := outbound.New(outbound.Policy{Purpose: "test", Allow: prefixes(t, "127.0.0.2/32")})
	c := g.Client(5 * time.Second)
	get := func(path string) error {
		resp, err := c.Get(site.URL + path)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}
	if err := get("/ok"); err != nil {
		t.Fatalf("GET of the allowed site = %v", err)
	}
	for _, to := range []string{"http://" + target.Addr + "/", "http://10.0.0.1/", "http://" + target6.Addr + "/"} {
		if err := get("/r?to=" + to); !errors.Is(err, outbound.ErrRefused) {
			t.Errorf("redirect to %s = %v; want ErrRefused", to, err)
		}
	}
	if err := get("/r?to=file:///etc/passwd"); !errors.Is(err, outbound.ErrRefused) {
		t.Errorf("redirect to file: = %v; want ErrRefused", err)
	}
	if err := get("/loop"); err == nil || !strings.Contains(err.Error(), "redirects") {
		t.Errorf("redirect loop = %v; want stopped after %d", err, outbound.MaxRedirects)
	}
	for _, w := range []*outboundtest.Watched{target, target6} {
		if n := w.Accepted(t); n != 0 {
			t.Errorf("redirect target %s accepted %d connections; want 0", w.Addr, n)
		}
	}
}

func TestLimitBody(t *testing.T) {
	for _, tc := range []struct {
		body string
		max  int64
		ok   bool
	}{{"0123456789", 10, true}, {"0123456789", 11, true}, {"0123456789", 9, false}, {"", 0, true}} {
		got, err := io.ReadAll(outbound.LimitBody(io.NopCloser(strings.NewReader(tc.body)), tc.max))
		if tc.ok && (err != nil || string(got) != tc.body) {
			t.Errorf("LimitBody(%q, %d) read %q, %v; want all of it", tc.body, tc.max, got, err)
		}
		if !tc.ok && !errors.Is(err, outbound.ErrTooLarge) {
			t.Errorf("LimitBody(%q, %d) read %q, %v; want ErrTooLarge", tc.body, tc.max, got, err)
		}
	}
}

type fixedBody struct {
	body   string
	length int64
}

func (f fixedBody) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, ContentLength: f.length, Body: io.NopCloser(strings.NewReader(f.body))}, nil
}

// TestCapBodies: a client that reads whole bodies gets an error past the cap,
// whether the length was declared or not.
func TestCapBodies(t *testing.T) {
	req, _ := http.NewRequest("GET", "https://example.org/", nil)
	if _, err := outbound.CapBodies(fixedBody{"0123456789", 10}, 9).RoundTrip(req); !errors.Is(err, outbound.ErrTooLarge) {
		t.Errorf("RoundTrip(declared 10 bytes, cap 9) = %v; want ErrTooLarge", err)
	}
	resp, err := outbound.CapBodies(fixedBody{"0123456789", -1}, 9).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, outbound.ErrTooLarge) {
		t.Errorf("read of 10 undeclared bytes, cap 9 = %v; want ErrTooLarge", err)
	}
	resp, _ = outbound.CapBodies(fixedBody{"0123456789", -1}, 10).RoundTrip(req)
	if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 10 {
		t.Errorf("read of 10 bytes, cap 10 = %d bytes, %v", len(b), err)
	}
}
