package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
)

// Limits of the federation transport.
const (
	// resolveTTL is how long a server name's resolution is kept; a failed
	// request re-resolves at once.
	resolveTTL = time.Hour
	// maxResolved bounds the resolution cache, which other servers' names fill.
	maxResolved = 10_000
	// maxWellKnown bounds a /.well-known/matrix/server document.
	maxWellKnown = 50 << 10
	// transportIdle is how long the transport of an unused TLS server name is kept.
	transportIdle = 5 * time.Minute
)

// matrixTransport sends the requests of gomatrixserverlib's clients
// (matrix://server/path URLs) to other servers. It resolves server names itself,
// as the spec says (IP literal, explicit port, /.well-known/matrix/server, SRV,
// port 8448), because fclient's resolver fetches the well-known document with an
// unguarded client; every connection, the well-known fetch included, dials
// through the guard. Redirects are refused: federation never redirects, and a
// hop would otherwise leave the guard's accounting of where we connect.
type matrixTransport struct {
	guard      *outbound.Guard
	skipVerify bool
	roots      *x509.CertPool // nil: the system's
	wellKnown  *http.Client

	mu         sync.Mutex
	resolved   map[spec.ServerName]resolution   // guarded by mu
	transports map[string]*destinationTransport // by TLS server name; guarded by mu
}

type resolution struct {
	results []fclient.ResolutionResult
	expires time.Time
}

type destinationTransport struct {
	*http.Transport
	lastUsed time.Time
}

func newMatrixTransport(guard *outbound.Guard, skipVerify bool, roots *x509.CertPool) *matrixTransport {
	t := &matrixTransport{guard: guard, skipVerify: skipVerify, roots: roots,
		resolved: map[spec.ServerName]resolution{}, transports: map[string]*destinationTransport{}}
	wk := guard.Transport()
	wk.TLSClientConfig = &tls.Config{InsecureSkipVerify: skipVerify, RootCAs: roots, MinVersion: tls.VersionTLS12} // #nosec G402 -- test networks only, logged
	wk.DisableKeepAlives = true
	t.wellKnown = &http.Client{Transport: wk, Timeout: 10 * time.Second, CheckRedirect: outbound.CheckRedirect}
	return t
}

// errRedirect refuses a redirect in federation.
var errRedirect = errors.New("federation: redirects are not followed")

// RoundTrip sends r to the server its URL names, trying each resolved
// destination in turn.
func (t *matrixTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Response != nil {
		return nil, errRedirect
	}
	name := spec.ServerName(r.URL.Host)
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		results, cached, err := t.resolve(r.Context(), name)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", name, err)
		}
		for i, res := range results {
			req := r.Clone(r.Context())
			if i > 0 || attempt > 0 {
				if r.Body != nil && r.Body != http.NoBody && r.GetBody == nil {
					return nil, lastErr // the body is spent: no other destination can be tried
				}
				if r.GetBody != nil {
					if req.Body, err = r.GetBody(); err != nil {
						return nil, err
					}
				}
			}
			req.URL.Scheme, req.URL.Host, req.Host = "https", res.Destination, string(res.Host)
			resp, err := t.transport(res.TLSServerName).RoundTrip(req)
			if err == nil {
				return resp, nil
			}
			lastErr = err
			if errors.Is(err, outbound.ErrRefused) {
				// The same name resolves the same way: no retry.
				return nil, refusedServer{err: err, mx: mxerror.New(mxerror.Forbidden, "federation with %s is not allowed from this server", name)}
			}
		}
		t.forget(name)
		if !cached {
			break
		}
	}
	return nil, lastErr
}

// refusedServer is the guard's refusal, carrying a Matrix error too: a client
// whose request needed a refused server gets M_FORBIDDEN, not a 500.
type refusedServer struct {
	err error
	mx  *mxerror.Error
}

func (e refusedServer) Error() string   { return e.err.Error() }
func (e refusedServer) Unwrap() []error { return []error{e.err, e.mx} }

// transport returns the transport for one TLS server name: the name a
// certificate is checked against differs from the address dialled after SRV or
// well-known delegation, and http.Transport has one TLS configuration.
func (t *matrixTransport) transport(tlsName string) http.RoundTripper {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	tr, ok := t.transports[tlsName]
	if !ok {
		if len(t.transports) >= 1000 {
			for name, old := range t.transports {
				if now.Sub(old.lastUsed) > transportIdle {
					old.CloseIdleConnections()
					delete(t.transports, name)
				}
			}
		}
		h := t.guard.Transport()
		h.TLSClientConfig = &tls.Config{ServerName: tlsName, InsecureSkipVerify: t.skipVerify, RootCAs: t.roots, // #nosec G402 -- test networks only, logged
			MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(0)}
		// One connection per request, as gomatrixserverlib's transport does.
		h.DisableKeepAlives = true
		// A large room's send_join is built before its headers are sent: the
		// clients' own timeouts (30 s, or 10 min for the slow one) bound the wait.
		h.ResponseHeaderTimeout = 0
		tr = &destinationTransport{Transport: h}
		t.transports[tlsName] = tr
	}
	tr.lastUsed = now
	return tr
}

func (t *matrixTransport) forget(name spec.ServerName) {
	t.mu.Lock()
	delete(t.resolved, name)
	t.mu.Unlock()
}

// resolve finds where to send requests for name, from the cache when it can.
func (t *matrixTransport) resolve(ctx context.Context, name spec.ServerName) (results []fclient.ResolutionResult, cached bool, err error) {
	t.mu.Lock()
	r, ok := t.resolved[name]
	t.mu.Unlock()
	if ok && time.Now().Before(r.expires) {
		return r.results, true, nil
	}
	results, err = t.resolveServer(ctx, name, true)
	if err != nil {
		return nil, false, err
	}
	t.mu.Lock()
	if len(t.resolved) >= maxResolved {
		clear(t.resolved)
	}
	t.resolved[name] = resolution{results: results, expires: time.Now().Add(resolveTTL)}
	t.mu.Unlock()
	return results, false, nil
}

// resolveServer is the spec's server name resolution
// (https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names).
func (t *matrixTransport) resolveServer(ctx context.Context, name spec.ServerName, wellKnown bool) ([]fclient.ResolutionResult, error) {
	host, port, ok := spec.ParseAndValidateServerName(name)
	if !ok {
		return nil, fmt.Errorf("invalid server name %q", name)
	}
	bare := host
	if len(bare) > 1 && bare[0] == '[' && bare[len(bare)-1] == ']' {
		bare = bare[1 : len(bare)-1]
	}
	// 1. An IP literal, and 2. a name with an explicit port, are dialled as they are.
	if net.ParseIP(bare) != nil || port != -1 {
		dest := string(name)
		if port == -1 {
			dest = net.JoinHostPort(bare, "8448")
		}
		return []fclient.ResolutionResult{{Destination: dest, Host: name, TLSServerName: bare}}, nil
	}
	// 3. A well-known document may delegate to another name.
	if wellKnown {
		if delegated, err := t.lookupWellKnown(ctx, name); err == nil {
			return t.resolveServer(ctx, delegated, false)
		}
	}
	// 4. SRV records (matrix-fed, then the deprecated matrix).
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := net.DefaultResolver.LookupSRV(ctx, service, "tcp", string(name))
		if err != nil || len(records) == 0 {
			continue
		}
		results := make([]fclient.ResolutionResult, 0, len(records))
		for _, rec := range records {
			target := rec.Target
			if n := len(target); n > 0 && target[n-1] == '.' {
				target = target[:n-1]
			}
			results = append(results, fclient.ResolutionResult{
				Destination: net.JoinHostPort(target, strconv.Itoa(int(rec.Port))), Host: name, TLSServerName: string(name)})
		}
		return results, nil
	}
	// 5. Port 8448 of the name itself.
	return []fclient.ResolutionResult{{Destination: net.JoinHostPort(string(name), "8448"), Host: name, TLSServerName: string(name)}}, nil
}

// lookupWellKnown fetches https://name/.well-known/matrix/server through the
// guard and returns the name it delegates to.
func (t *matrixTransport) lookupWellKnown(ctx context.Context, name spec.ServerName) (spec.ServerName, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+string(name)+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", err
	}
	resp, err := t.wellKnown.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("well-known of %s: status %d", name, resp.StatusCode)
	}
	body, err := io.ReadAll(outbound.LimitBody(resp.Body, maxWellKnown))
	if err != nil {
		return "", fmt.Errorf("well-known of %s: %w", name, err)
	}
	var doc struct {
		Server spec.ServerName `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Server == "" {
		return "", fmt.Errorf("well-known of %s: no m.server", name)
	}
	return doc.Server, nil
}
