package federation

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/outbound/outboundtest"
)

// wellKnownAnswer answers every well-known lookup with one document, so a test
// can delegate a name without DNS.
type wellKnownAnswer string

func (w wellKnownAnswer) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(string(w)))}, nil
}

// TestTransportRefusesDelegationInward: a server name whose well-known
// document delegates to loopback, or that names loopback itself, is refused
// before any connection; with the internal policy (--federation-insecure) the
// same request goes through.
func TestTransportRefusesDelegationInward(t *testing.T) {
	t.Parallel()
	watched := outboundtest.Watch(t, "tcp4", "127.0.0.1")
	local := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(local.Close)
	get := func(tr http.RoundTripper, name string) error {
		req, _ := http.NewRequest(http.MethodGet, "matrix://"+name+"/_matrix/key/v2/server", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	strict := outbound.New(outbound.Policy{Purpose: "federation"})
	tr := newMatrixTransport(strict, true, nil)
	tr.wellKnown.Transport = wellKnownAnswer(`{"m.server": "` + watched.Addr + `"}`)
	for _, name := range []string{"example.org", watched.Addr, "localhost:" + strings.Split(watched.Addr, ":")[1], "10.0.0.1"} {
		err := get(tr, name)
		var mx *mxerror.Error
		if !errors.Is(err, outbound.ErrRefused) || !errors.As(err, &mx) || mx.Code != mxerror.Forbidden {
			t.Errorf("request to %s = %v; want ErrRefused as M_FORBIDDEN", name, err)
		}
	}
	if strict.Dials() != 0 {
		t.Errorf("strict guard dialled %d times; want 0", strict.Dials())
	}
	if n := watched.Accepted(t); n != 0 {
		t.Errorf("delegated-to listener accepted %d connections; want 0", n)
	}

	internal := outbound.New(outbound.Policy{Purpose: "federation", Internal: true})
	tr = newMatrixTransport(internal, true, nil)
	tr.wellKnown.Transport = wellKnownAnswer(`{"m.server": "` + strings.TrimPrefix(local.URL, "https://") + `"}`)
	if err := get(tr, "example.org"); err != nil {
		t.Errorf("internal policy, delegated to %s: %v", local.URL, err)
	}
	if internal.Dials() != 1 {
		t.Errorf("internal guard dialled %d times; want 1", internal.Dials())
	}
}

// TestTransportRefusesRedirects: federation does not follow redirects.
func TestTransportRefusesRedirects(t *testing.T) {
	t.Parallel()
	watched := outboundtest.Watch(t, "tcp4", "127.0.0.1")
	remote := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://"+watched.Addr+"/", http.StatusFound)
	}))
	t.Cleanup(remote.Close)
	tr := newMatrixTransport(outbound.New(outbound.Policy{Purpose: "federation", Internal: true}), true, nil)
	client := &http.Client{Transport: tr}
	_, err := client.Get("matrix://" + strings.TrimPrefix(remote.URL, "https://") + "/_matrix/federation/v1/version")
	if !errors.Is(err, errRedirect) {
		t.Errorf("redirected request = %v; want errRedirect", err)
	}
	if n := watched.Accepted(t); n != 0 {
		t.Errorf("redirect target accepted %d connections; want 0", n)
	}
}
