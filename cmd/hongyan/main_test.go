package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// binary is the hongyan command built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hongyan-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "hongyan")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic("build hongyan: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func hongyan(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// logBuffer collects a child process's output while the test reads it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// servingAt matches the client API's address in the startup log line.
var servingAt = regexp.MustCompile(`msg="hongyan is serving".* client_api=(http://\S+)`)

// waitServing waits for the server to log the address it bound (it listens on
// 127.0.0.1:0, so no port is picked, released and bound again) and returns it.
func waitServing(t *testing.T, logs *logBuffer) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if m := servingAt.FindStringSubmatch(logs.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not say where it serves:\n%s", logs.String())
		}
	}
}

func TestSubcommands(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k.key")
	if out, err := hongyan(t, "keys", "generate", "-out", key); err != nil || !strings.Contains(out, "ed25519:") {
		t.Fatalf("keys generate = %q, %v", out, err)
	}
	if out, err := hongyan(t, "keys", "generate", "-out", key); err == nil {
		t.Errorf("keys generate over an existing key = %q, nil; want a refusal", out)
	}
	out, err := hongyan(t, "config", "--server-name", "example.org", "--rate-limit=false")
	if err != nil || !strings.Contains(out, "server_name: example.org") || !strings.Contains(out, "enabled: false") {
		t.Errorf("config = %q, %v; want the overrides in the YAML", out, err)
	}
	if out, err := hongyan(t, "config", "--metrics-listen", "127.0.0.1:9102"); err != nil || !strings.Contains(out, "metrics:\n    listen: 127.0.0.1:9102") {
		t.Errorf("config --metrics-listen = %q, %v; want metrics.listen set", out, err)
	}
	if out, err := hongyan(t, "migrate", "--data-dir", filepath.Join(dir, "m")); err != nil || !strings.Contains(out, "applied") {
		t.Errorf("migrate = %q, %v", out, err)
	}
	if out, err := hongyan(t, "bogus"); err == nil {
		t.Errorf("hongyan bogus = %q, nil; want an error", out)
	}
}

// TestRunServesAndStopsGracefully is the README's quick start: create an admin,
// start the server, log in over HTTP, stop it with SIGTERM.
func TestRunServesAndStopsGracefully(t *testing.T) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			dataDir := t.TempDir()
			dsn := storagetest.DSN(t, d)
			common := []string{"--data-dir", dataDir, "--database-url", dsn}
			if out, err := hongyan(t, append([]string{"admin", "create-user", "--user", "root", "--password", "pw-root", "--admin"}, common...)...); err != nil {
				t.Fatalf("admin create-user = %q, %v", out, err)
			}
			var logs logBuffer
			cmd := exec.Command(binary, append([]string{"run", "--listen", "127.0.0.1:0", "--native-listen", "127.0.0.1:0", "--rate-limit=false"}, common...)...)
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			base := waitServing(t, &logs)
			body := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"root"},"password":"pw-root"}`
			resp, err := http.Post(base+"/_matrix/client/v3/login", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var login map[string]any
			json.NewDecoder(resp.Body).Decode(&login)
			resp.Body.Close()
			if resp.StatusCode != 200 || login["user_id"] != "@root:localhost:8008" {
				t.Fatalf("login = %d %v; want @root:localhost:8008", resp.StatusCode, login)
			}
			if resp, err := http.Get(base + "/metrics"); err != nil {
				t.Errorf("GET /metrics: %v", err)
			} else {
				var b bytes.Buffer
				b.ReadFrom(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(b.String(), "hongyan_http_request_duration_seconds") {
					t.Errorf("GET /metrics = %d without request metrics", resp.StatusCode)
				}
			}
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exit after SIGTERM = %v; want 0\n%s", err, logs.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("server did not stop within 20s of SIGTERM\n%s", logs.String())
			}
			// localhost:8008 is a development name: registration is open, and said loudly.
			if !strings.Contains(logs.String(), "level=WARN msg=\"REGISTRATION IS OPEN") {
				t.Errorf("logs lack the open-registration warning:\n%s", logs.String())
			}
			if !strings.Contains(logs.String(), "hongyan stopped") {
				t.Errorf("logs lack the shutdown line:\n%s", logs.String())
			}
		})
	}
}
