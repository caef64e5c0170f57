// Package outbound is the one guarded way out of the server: every HTTP request
// Hongyan makes to an address it did not choose itself (federation, other servers'
// media, URL previews) dials through a Guard.
//
// A Guard checks the IP address of every connection as it is dialled, in
// net.Dialer.Control, after DNS resolution and after every redirect. A hostname
// that resolves inward, a DNS answer that changes between check and use
// (rebinding), a well-known delegation or a redirect to 127.0.0.1 all end at the
// same check, before the connect system call: a refused address never sees a
// packet. By default only global unicast addresses pass; loopback, private
// (RFC 1918, fc00::/7), link-local, CGNAT, multicast, unspecified and the other
// special-purpose ranges are refused, in IPv4-mapped IPv6 form too, unless a
// per-purpose allow-list names them.
//
// Destinations the operator configured (a push gateway, an application service)
// are trusted as configured: Trusted returns a guard with the same timeouts and
// redirect rules but no address check.
package outbound

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrRefused is returned (wrapped, through net.OpError and url.Error) when a
// guard refuses the address a request would connect to.
var ErrRefused = errors.New("address not allowed")

// Policy says where one purpose's requests may connect. The zero value admits
// global unicast addresses only.
type Policy struct {
	// Purpose names the requests in errors: "federation", "url preview".
	Purpose string
	// Allow lists prefixes that may be reached although they are not global
	// (a private deployment's own network). IPv4 prefixes also match the
	// IPv4-mapped IPv6 form of their addresses.
	Allow []netip.Prefix
	// Internal also admits loopback, private and other non-global unicast
	// addresses, but not link-local (cloud metadata endpoints live there),
	// multicast or unspecified ones. For federation on test networks only
	// (--federation-insecure), where servers run on one machine.
	Internal bool
	// Trusted turns the address check off: for destinations the operator
	// configured, never for ones a user or another server supplies.
	Trusted bool
}

// Guard dials for one purpose under its Policy and counts what it did. A Guard is
// safe for concurrent use; its Policy never changes after New.
type Guard struct {
	policy   Policy
	dials    atomic.Int64
	refusals atomic.Int64
}

// New returns a guard enforcing p.
func New(p Policy) *Guard { return &Guard{policy: p} }

// Trusted returns a guard for destinations the operator configured: the same
// timeouts, redirect and scheme rules, no address check.
func Trusted(purpose string) *Guard { return New(Policy{Purpose: purpose, Trusted: true}) }

// Purpose is the name the guard was built with.
func (g *Guard) Purpose() string { return g.policy.Purpose }

// Dials is how many connections the guard let the system dial: each passed the
// check. Tests use it to prove a refused address was never connected to.
func (g *Guard) Dials() int64 { return g.dials.Load() }

// Refusals is how many connections the guard refused.
func (g *Guard) Refusals() int64 { return g.refusals.Load() }

// Check reports whether the guard lets a connection to ip through; the error
// wraps ErrRefused.
func (g *Guard) Check(ip netip.Addr) error {
	if g.policy.Trusted || Allowed(ip, g.policy.Allow, g.policy.Internal) {
		return nil
	}
	return fmt.Errorf("%s: %w: %s", g.policy.Purpose, ErrRefused, ip)
}

// Allowed is the address classification behind every guard: ip passes if an
// allow prefix contains it, or if it is global unicast and in no special-purpose
// range, or (internal) if it is unicast but neither link-local nor otherwise
// unusable. IPv4-mapped IPv6 addresses are judged as the IPv4 address they map.
func Allowed(ip netip.Addr, allow []netip.Prefix, internal bool) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.WithZone("")
	unmapped := ip.Unmap()
	for _, p := range allow {
		if p.Contains(unmapped) || p.Contains(ip) {
			return true
		}
	}
	ip = unmapped
	switch {
	case ip.IsUnspecified(), ip.IsMulticast(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(),
		ip.IsInterfaceLocalMulticast(), inAny(ip, unusable):
		return false
	case internal:
		return true
	case !ip.IsGlobalUnicast(), ip.IsPrivate(), ip.IsLoopback(), inAny(ip, special):
		return false
	}
	return true
}

// unusable ranges are refused even to Internal policies: nothing a test
// network or a remote server needs lives there.
var unusable = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255 broadcast
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local, where cloud metadata endpoints answer
	netip.MustParsePrefix("fe80::/10"),       // link-local
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation (TEST-NET-1)
	netip.MustParsePrefix("198.51.100.0/24"), // documentation (TEST-NET-2)
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation (TEST-NET-3)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("3fff::/20"),       // documentation (RFC 9637)
	netip.MustParsePrefix("2001:10::/28"),    // ORCHID
	netip.MustParsePrefix("2001:20::/28"),    // ORCHIDv2
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast (deprecated)
}

// special ranges look global (or are private) but are not the public internet:
// refused unless Internal or allow-listed. Tunnels and translations that embed
// an IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible and -translated) could
// carry a private one, so they are refused whole.
var special = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("2001:2::/48"),     // benchmarking
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("fc00::/7"),        // unique local (IsPrivate too; named for the reader)
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2002::/16"),       // 6to4
	netip.MustParsePrefix("2001::/32"),       // Teredo
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated)
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (RFC 2765)
}

func inAny(ip netip.Addr, ranges []netip.Prefix) bool {
	for _, p := range ranges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// control runs for every connection the guard's dialer makes, with the address
// about to be connected: the check sits here, after DNS, so nothing between
// check and connect can change the address.
func (g *Guard) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	if network != "tcp4" && network != "tcp6" {
		g.refusals.Add(1)
		return fmt.Errorf("%s: %w: network %s", g.policy.Purpose, ErrRefused, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		g.refusals.Add(1)
		return fmt.Errorf("%s: %w: %q: %w", g.policy.Purpose, ErrRefused, address, err)
	}
	if err := g.Check(ap.Addr()); err != nil {
		g.refusals.Add(1)
		return err
	}
	g.dials.Add(1)
	return nil
}

// DialTimeout bounds connecting, the TLS handshake and waiting for response
// headers on every guarded transport.
const DialTimeout = 10 * time.Second

// Dialer returns a dialer that checks every address it connects to.
func (g *Guard) Dialer() *net.Dialer {
	return &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second, ControlContext: g.control}
}

// DialContext dials through the guard; it has net.Dialer.DialContext's signature
// so it plugs into an http.Transport.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return g.Dialer().DialContext(ctx, network, address)
}

// Transport returns a new HTTP transport that dials through the guard, with no
// proxy (a proxy would dial for us, past the check) and bounded waits. Callers
// may adjust its TLS configuration before first use.
func (g *Guard) Transport() *http.Transport {
	return &http.Transport{
		DialContext:            g.DialContext,
		Proxy:                  nil,
		TLSHandshakeTimeout:    DialTimeout,
		ResponseHeaderTimeout:  2 * DialTimeout,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConnsPerHost:    2,
		MaxResponseHeaderBytes: 64 << 10,
		ForceAttemptHTTP2:      true,
	}
}

// MaxRedirects bounds the redirects a guarded client follows.
const MaxRedirects = 5

// Client returns an HTTP client over the guard's Transport whose whole exchange,
// body included, ends after timeout. It follows at most MaxRedirects redirects,
// only to http and https URLs; each hop dials through the guard again.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	return &http.Client{Transport: g.Transport(), Timeout: timeout, CheckRedirect: CheckRedirect}
}

// CheckRedirect is the redirect rule of guarded clients: at most MaxRedirects
// hops, each to an http or https URL.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return fmt.Errorf("stopped after %d redirects", MaxRedirects)
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return fmt.Errorf("%w: redirect to scheme %q", ErrRefused, s)
	}
	return nil
}

// ParsePrefixes parses a comma-separated list of CIDR prefixes (an allow-list
// setting); a bare address is taken as a prefix of that one address.
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("allow-list entry %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("allow-list entry %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// LimitBody caps how much of a response body a reader gets: past max bytes,
// Read fails with ErrTooLarge instead of truncating silently.
func LimitBody(body io.ReadCloser, max int64) io.ReadCloser {
	return &limitedBody{rc: body, left: max}
}

// ErrTooLarge is returned by a body capped with LimitBody or CapBodies once it
// runs past its limit.
var ErrTooLarge = errors.New("response body too large")

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body that ends exactly at the limit from one that goes on.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, ErrTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// CapBodies wraps rt so that every response body it returns is capped at max
// bytes (LimitBody): for clients, like gomatrixserverlib's, that read whole
// bodies with io.ReadAll.
func CapBodies(rt http.RoundTripper, max int64) http.RoundTripper {
	return capped{rt: rt, max: max}
}

type capped struct {
	rt  http.RoundTripper
	max int64
}

func (c capped) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > c.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %w: %d bytes", r.URL.Redacted(), ErrTooLarge, resp.ContentLength)
	}
	resp.Body = LimitBody(resp.Body, c.max)
	return resp, nil
}
