package homeserver_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestRegistrationClosedForProductionNames: a production server behind a
// reverse proxy listens on loopback, exactly like a developer's; only the server
// name tells them apart, so only a development name opens registration by
// default. Every server here listens on 127.0.0.1.
func TestRegistrationClosedForProductionNames(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		serverName string
		enabled    *bool
		status     int
		errcode    string
	}{
		{"chat.example.org", nil, http.StatusForbidden, "M_FORBIDDEN"},
		{"localhost:8448", nil, http.StatusOK, ""},
		{"chat.example.org", &yes, http.StatusOK, ""},
		{"localhost:8448", &no, http.StatusForbidden, "M_FORBIDDEN"},
	}
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			for _, c := range cases {
				srv := testserver.Start(t, d, func(cfg *config.Config) {
					cfg.ServerName, cfg.Registration.Enabled = c.serverName, c.enabled
				})
				if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
					t.Fatalf("server listens on %s; want loopback", srv.URL)
				}
				var e struct {
					ErrCode string `json:"errcode"`
					UserID  string `json:"user_id"`
				}
				status := srv.Client(t).Do("POST", "/_matrix/client/v3/register", map[string]any{
					"username": "mallory", "password": "a-long-password", "auth": map[string]string{"type": "m.login.dummy"},
				}, &e)
				enabled := "unset"
				if c.enabled != nil {
					enabled = map[bool]string{true: "true", false: "false"}[*c.enabled]
				}
				if status != c.status || e.ErrCode != c.errcode {
					t.Errorf("register on %s (registration.enabled %s) = %d %s; want %d %s", c.serverName, enabled, status, e.ErrCode, c.status, c.errcode)
				}
				if status == http.StatusOK && e.UserID != "@mallory:"+c.serverName {
					t.Errorf("register on %s = user %q; want @mallory:%s", c.serverName, e.UserID, c.serverName)
				}
			}
		})
	}
}

// TestMetricsOnTheirOwnListener: with metrics.listen set, /metrics is served
// there and nowhere on the public client listener; unset, it stays on the client
// listener as before.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	get := func(t *testing.T, url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			srv := testserver.Start(t, d, func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
			if !strings.HasPrefix(srv.MetricsURL, "http://127.0.0.1:") {
				t.Fatalf("MetricsURL = %q; want a loopback URL", srv.MetricsURL)
			}
			srv.Client(t).Do("GET", "/_matrix/client/versions", nil, nil) // a request to count
			status, body := get(t, srv.URL+"/metrics")
			var e struct {
				ErrCode string `json:"errcode"`
			}
			json.Unmarshal([]byte(body), &e)
			if status != http.StatusNotFound || e.ErrCode != "M_UNRECOGNIZED" || strings.Contains(body, "go_goroutines") {
				t.Errorf("GET client listener /metrics = %d %.80q; want 404 M_UNRECOGNIZED", status, body)
			}
			if status, body := get(t, srv.MetricsURL); status != http.StatusOK || !strings.Contains(body, "hongyan_http_request_duration_seconds") {
				t.Errorf("GET %s = %d without request metrics; want 200 with them", srv.MetricsURL, status)
			}
			// The metrics listener serves nothing else.
			metricsBase := strings.TrimSuffix(srv.MetricsURL, "/metrics")
			if status, _ := get(t, metricsBase+"/_matrix/client/versions"); status != http.StatusNotFound {
				t.Errorf("GET metrics listener /_matrix/client/versions = %d; want 404", status)
			}

			// Positive control: unset, /metrics is on the client listener.
			plain := testserver.Start(t, d)
			if plain.MetricsURL != "" {
				t.Errorf("MetricsURL without metrics.listen = %q; want empty", plain.MetricsURL)
			}
			if status, body := get(t, plain.URL+"/metrics"); status != http.StatusOK || !strings.Contains(body, "go_goroutines") {
				t.Errorf("GET client listener /metrics without metrics.listen = %d; want 200 with metrics", status)
			}
		})
	}
}
