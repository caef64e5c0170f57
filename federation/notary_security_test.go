package federation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/hongyan/hongyan/federation"
	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// keyRequest sends an unsigned request to a key endpoint of srv, as any address
// on the internet may, and returns the status and the decoded answer.
func keyRequest(t *testing.T, srv *testserver.Server, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, srv.FederationURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestNotaryCapsServersPerRequest: a key query naming more servers than the cap
// is refused for its size before any server is asked; one within the cap is
// answered with the keys of the servers it names.
func TestNotaryCapsServersPerRequest(t *testing.T) {
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		serversNamed := func(names ...string) map[string]any {
			keys := map[string]any{}
			for _, n := range names {
				keys[n] = map[string]any{}
			}
			return map[string]any{"server_keys": keys}
		}
		var many []string
		for port := 1; port <= 1000; port++ {
			many = append(many, fmt.Sprintf("127.0.0.1:%d", port)) // loopback: nothing leaves the machine either way
		}
		manyKeys := map[string]any{}
		for i := range 1000 {
			manyKeys[fmt.Sprintf("ed25519:k%d", i)] = map[string]any{}
		}
		for _, tc := range []struct {
			name       string
			body       map[string]any
			wantStatus int
			wantCode   string
			wantDocs   int
		}{
			{"1000 servers", serversNamed(many...), http.StatusRequestEntityTooLarge, "M_TOO_LARGE", 0},
			{"1000 key IDs of one server", map[string]any{"server_keys": map[string]any{b.Config.ServerName: manyKeys}},
				http.StatusRequestEntityTooLarge, "M_TOO_LARGE", 0},
			{"two servers", serversNamed(a.Config.ServerName, b.Config.ServerName), http.StatusOK, "", 2},
		} {
			status, out := keyRequest(t, a, "POST", "/_matrix/key/v2/query", tc.body)
			docs, _ := out["server_keys"].([]any)
			if status != tc.wantStatus || (tc.wantCode != "" && out["errcode"] != tc.wantCode) || len(docs) != tc.wantDocs {
				t.Errorf("POST /key/v2/query with %s = %d %v, %d documents; want %d %s, %d documents",
					tc.name, status, out["errcode"], len(docs), tc.wantStatus, tc.wantCode, tc.wantDocs)
			}
		}
		// b's document, fetched for the asker, is kept so a can vouch for b's
		// key later, but servers kept only that way are bounded: with b kept, a
		// bound of one keeps b's next document and refuses a new server's.
		var kept int
		if err := a.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM server_key_docs WHERE server_name = $1`, b.Config.ServerName).Scan(&kept); err != nil {
			t.Fatal(err)
		}
		if kept == 0 {
			t.Errorf("key documents of %s kept after a notary query = 0; want its keys", b.Config.ServerName)
		}
		ctx := context.Background()
		for _, tc := range []struct {
			server string
			limit  int
			want   bool
		}{
			{b.Config.ServerName, 1, true}, // kept already: stays current
			{"new.example.org", 1, false},  // the bound is reached
			{"new.example.org", 2, true},   // below the bound
		} {
			if got := federation.KeepNotaryDoc(ctx, a.Federation, tc.server, tc.limit); got != tc.want {
				t.Errorf("KeepNotaryDoc(%s, limit %d) = %v; want %v", tc.server, tc.limit, got, tc.want)
			}
		}
	})
}

// TestKeyEndpointsRateLimitedPerAddress: the key endpoints are asked unsigned, so
// they are limited per remote address; past the burst the answer is 429
// M_LIMIT_EXCEEDED, whichever key endpoint is asked.
func TestKeyEndpointsRateLimitedPerAddress(t *testing.T) {
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated, func(c *config.Config) {
			c.RateLimit.Enabled = true
			c.Federation.RatePerSecond, c.Federation.RateBurst = 0.01, 3
		})
		own := map[string]any{"server_keys": map[string]any{a.Config.ServerName: map[string]any{}}}
		requests := []struct{ method, path string }{
			{"GET", "/_matrix/key/v2/server"},
			{"POST", "/_matrix/key/v2/query"},
			{"GET", "/_matrix/key/v2/query/" + a.Config.ServerName},
			{"POST", "/_matrix/key/v2/query"},
		}
		for i, r := range requests {
			var body any
			if r.method == "POST" {
				body = own
			}
			status, out := keyRequest(t, a, r.method, r.path, body)
			want, wantCode := http.StatusOK, ""
			if i >= 3 {
				want, wantCode = http.StatusTooManyRequests, "M_LIMIT_EXCEEDED"
			}
			if status != want || (wantCode != "" && out["errcode"] != wantCode) {
				t.Errorf("request %d, %s %s = %d %v; want %d %s", i+1, r.method, r.path, status, out["errcode"], want, wantCode)
			}
		}
	})
}
