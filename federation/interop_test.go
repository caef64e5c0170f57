//go:build interop

// The interop suite federates Hongyan with Dendrite v0.13.8, a second implementation
// of the server–server API. It runs with scripts/interop-dendrite.sh, which installs
// Dendrite's binaries and runs `go test -tags interop -run TestDendrite ./federation/`.

package federation_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// dendrite is a running Dendrite with a client for it.
type dendrite struct {
	URL        string // client API
	ServerName string // localhost:PORT of its federation listener
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startDendrite runs Dendrite on SQLite in a temporary directory, its federation on
// TLS at localhost:PORT (its server name), accepting self-signed certificates.
func startDendrite(t testing.TB) *dendrite {
	t.Helper()
	bin := os.Getenv("HONGYAN_DENDRITE_BIN")
	if bin == "" {
		t.Fatal("HONGYAN_DENDRITE_BIN is not set: run scripts/interop-dendrite.sh, which installs Dendrite and sets it")
	}
	dir := t.TempDir()
	httpPort, httpsPort := freePort(t), freePort(t)
	server := fmt.Sprintf("localhost:%d", httpsPort)
	run := func(name string, args ...string) []byte {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return out
	}
	run("generate-keys", "--private-key", "matrix_key.pem", "--tls-cert", "server.crt", "--tls-key", "server.key", "--server", "localhost", "--keysize", "2048")
	cfg := string(run("generate-config", "-ci", "-dir", dir, "-server", server))
	// Federation on a test network: accept the other servers' self-signed
	// certificates (the -ci config already does for everything but federation).
	cfg = strings.Replace(cfg, "  disable_tls_validation: false\n  disable_http_keepalives: true", "  disable_tls_validation: true\n  disable_http_keepalives: true", 1)
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "dendrite"), "-config", "dendrite.yaml",
		"-http-bind-address", fmt.Sprintf("127.0.0.1:%d", httpPort), "-https-bind-address", fmt.Sprintf("127.0.0.1:%d", httpsPort),
		"-tls-cert", "server.crt", "-tls-key", "server.key", "-really-enable-open-registration")
	cmd.Dir = dir
	logFile, err := os.Create(filepath.Join(dir, "dendrite.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "dendrite.log"))
			if len(log) > 8000 {
				log = log[len(log)-8000:]
			}
			t.Logf("dendrite log (tail):\n%s", log)
		}
	})
	d := &dendrite{URL: fmt.Sprintf("http://127.0.0.1:%d", httpPort), ServerName: server}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("dendrite did not come up")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return d
}

// register creates a Dendrite user with m.login.dummy and returns a client for it.
func (d *dendrite) register(t testing.TB, localpart string) *testserver.Client {
	t.Helper()
	c := testserver.NewClient(t, d.URL)
	var out struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
		DeviceID    string `json:"device_id"`
	}
	body := map[string]any{"username": localpart, "password": "interop-password-1", "auth": map[string]string{"type": "m.login.dummy"}}
	if st := c.Do("POST", "/_matrix/client/v3/register", body, &out); st != 200 {
		// Dendrite answers the first call with the flows and a session.
		var flows struct {
			Session string `json:"session"`
		}
		c.Do("POST", "/_matrix/client/v3/register", map[string]any{"username": localpart, "password": "interop-password-1"}, &flows)
		body["auth"] = map[string]string{"type": "m.login.dummy", "session": flows.Session}
		c.MustDo("POST", "/_matrix/client/v3/register", body, &out)
	}
	c.Token, c.UserID, c.Device = out.AccessToken, out.UserID, out.DeviceID
	return c
}

func joinedMembers(t testing.TB, c *testserver.Client, room string) map[string]any {
	var m struct {
		Joined map[string]any `json:"joined"`
	}
	c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &m)
	return m.Joined
}

func stateContent(c *testserver.Client, room, typ string) map[string]any {
	var m map[string]any
	if c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+typ, nil, &m) != 200 {
		return nil
	}
	return m
}

// TestDendriteInterop federates Hongyan with Dendrite both ways: a Hongyan user
// joins a room on Dendrite, a Dendrite user joins a room on Hongyan; messages,
// state changes and leaves flow both ways, and device keys are queried across.
func TestDendriteInterop(t *testing.T) {
	for _, db := range []storage.Dialect{storage.SQLite} {
		t.Run(string(db), func(t *testing.T) {
			d := startDendrite(t)
			h := testserver.Start(t, db, testserver.Federated)
			dora := d.register(t, "dora")
			hana := h.Register(t, "hana", "pw")

			t.Run("hongyan user joins a room on dendrite", func(t *testing.T) {
				var created map[string]string
				dora.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "On Dendrite"}, &created)
				room := created["room_id"]
				hana.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(d.ServerName), map[string]any{}, nil)
				if name := stateContent(hana, room, "m.room.name"); name["name"] != "On Dendrite" {
					t.Errorf("room name on Hongyan = %v", name)
				}
				waitFor(t, "dendrite to see hana join", func() bool { return joinedMembers(t, dora, room)[hana.UserID] != nil })
				send(t, dora, room, "d1", "hello from dendrite")
				waitFor(t, "hana to get dora's message", func() bool { return slices.Contains(bodies(t, hana, room), "hello from dendrite") })
				send(t, hana, room, "h1", "hello from hongyan")
				waitFor(t, "dora to get hana's message", func() bool { return slices.Contains(bodies(t, dora, room), "hello from hongyan") })
				dora.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]string{"topic": "set on dendrite"}, nil)
				waitFor(t, "the topic to reach hongyan", func() bool { return stateContent(hana, room, "m.room.topic")["topic"] == "set on dendrite" })
				hana.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
				waitFor(t, "dendrite to see hana leave", func() bool { return joinedMembers(t, dora, room)[hana.UserID] == nil })
			})

			t.Run("dendrite user joins a room on hongyan", func(t *testing.T) {
				var created map[string]string
				hana.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "On Hongyan"}, &created)
				room := created["room_id"]
				dora.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
				if name := stateContent(dora, room, "m.room.name"); name["name"] != "On Hongyan" {
					t.Errorf("room name on Dendrite = %v", name)
				}
				waitFor(t, "hongyan to see dora join", func() bool { return joinedMembers(t, hana, room)[dora.UserID] != nil })
				send(t, hana, room, "h2", "welcome to hongyan")
				waitFor(t, "dora to get hana's message", func() bool { return slices.Contains(bodies(t, dora, room), "welcome to hongyan") })
				send(t, dora, room, "d2", "thanks from dendrite")
				waitFor(t, "hana to get dora's message", func() bool { return slices.Contains(bodies(t, hana, room), "thanks from dendrite") })
				hana.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]string{"topic": "set on hongyan"}, nil)
				waitFor(t, "the topic to reach dendrite", func() bool { return stateContent(dora, room, "m.room.topic")["topic"] == "set on hongyan" })

				// Device keys, queried across in both directions.
				doraKey := uploadDeviceKeys(t, dora)
				hanaKey := uploadDeviceKeys(t, hana)
				waitFor(t, "hongyan to serve dora's device key", func() bool { return queriedKey(t, hana, dora.UserID, dora.Device) == doraKey })
				waitFor(t, "dendrite to serve hana's device key", func() bool { return queriedKey(t, dora, hana.UserID, hana.Device) == hanaKey })

				dora.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
				waitFor(t, "hongyan to see dora leave", func() bool { return joinedMembers(t, hana, room)[dora.UserID] == nil })
			})
		})
	}
}

// BenchmarkJoinDendriteRoom10k measures a Hongyan user joining, through
// Dendrite, a room with 10 000 joined members (HONGYAN_BENCH_MEMBERS overrides):
// the time for the join and the Go heap growth during it.
// Run with scripts/interop-dendrite.sh -run X -bench JoinDendriteRoom -benchtime 1x.
//
// Filling a room on Dendrite itself is out of reach (it admits joins at about 100
// a minute, slowing as the room grows: 6 700 members after 70 minutes), so the
// room is made on a Hongyan (A) with its members there, Dendrite joins it — that
// join is timed too — and B joins naming Dendrite alone: Dendrite answers
// make_join and send_join with the room's whole state. A stays up only to serve
// its signing key, which the members' events carry.
func BenchmarkJoinDendriteRoom10k(b *testing.B) {
	ctx := context.Background()
	members := 10_000
	if n, err := strconv.Atoi(os.Getenv("HONGYAN_BENCH_MEMBERS")); err == nil && n > 0 {
		members = n
	}
	a := testserver.Start(b, storage.SQLite, testserver.Federated)
	alice := a.Register(b, "alice", "pw")
	var created map[string]string
	alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
	room := created["room_id"]
	for i := range members - 2 {
		user := fmt.Sprintf("@member%05d:%s", i, a.Config.ServerName)
		if _, err := a.Rooms.SetMembership(ctx, room, rooms.Membership{Sender: user, Target: user, Membership: "join"}); err != nil {
			b.Fatal(err)
		}
	}
	d := startDendrite(b)
	dora := d.register(b, "dora")
	start := time.Now()
	// Dendrite answers 202 when the join outlasts its request and carries on
	// in the background.
	if st := dora.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(a.Config.ServerName), map[string]any{}, nil); st != 200 && st != 202 {
		b.Fatalf("Dendrite's join = %d", st)
	}
	b.Logf("Dendrite's join request returned after %s", time.Since(start).Round(100*time.Millisecond))
	for deadline := time.Now().Add(30 * time.Minute); ; time.Sleep(2 * time.Second) {
		if n := len(joinedMembers(b, dora, room)); n == members {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("Dendrite sees %d members; want %d", n, members)
		}
	}
	b.Logf("Dendrite holds all %d members %s after its join began", members, time.Since(start).Round(100*time.Millisecond))

	h := testserver.Start(b, storage.SQLite, testserver.Federated)
	hana := h.Register(b, "hana", "pw")
	b.ResetTimer()
	var total time.Duration
	var peak uint64
	for i := 0; i < b.N; i++ {
		took, grew := heapDuring(func() {
			hana.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(d.ServerName), map[string]any{}, nil)
		})
		total += took
		peak = max(peak, grew)
		if n := len(joinedMembers(b, hana, room)); n != members+1 {
			b.Fatalf("Hongyan sees %d joined members; want %d", n, members+1)
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/join")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// BenchmarkJoinRunningDendriteRoom joins a room on a Dendrite that is already
// running (HONGYAN_DENDRITE_SERVER, its federation server name, and
// HONGYAN_DENDRITE_ROOM): for measuring a join while a long fill, such as
// BenchmarkJoinDendriteRoom10k's, is still under way elsewhere. It reports the
// members seen after the join.
func BenchmarkJoinRunningDendriteRoom(b *testing.B) {
	server, room := os.Getenv("HONGYAN_DENDRITE_SERVER"), os.Getenv("HONGYAN_DENDRITE_ROOM")
	if server == "" || room == "" {
		b.Fatal("HONGYAN_DENDRITE_SERVER and HONGYAN_DENDRITE_ROOM name the running Dendrite and its room")
	}
	var total time.Duration
	var peak uint64
	members := 0
	for i := 0; i < b.N; i++ {
		h := testserver.Start(b, storage.SQLite, testserver.Federated)
		hana := h.Register(b, "hana", "pw")
		took, grew := heapDuring(func() {
			hana.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(server), map[string]any{}, nil)
		})
		total += took
		peak = max(peak, grew)
		members = len(joinedMembers(b, hana, room))
		h.Stop()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/join")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(members), "members")
}
