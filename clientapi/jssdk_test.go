package clientapi_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestMatrixJSSDKChat runs two matrix-js-sdk clients (testdata/jssdk, installed by
// scripts/test.sh with npm ci) whose sync loops chat in real time: every ping Alice
// sends reaches Bob's loop, whose answer reaches Alice's, in order.
func TestMatrixJSSDKChat(t *testing.T) {
	dir := filepath.Join("testdata", "jssdk")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		t.Fatalf("matrix-js-sdk is not installed: run scripts/test.sh, or npm ci in %s", dir)
	}
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)

		const rounds = 5
		cmd := exec.Command("node", "chat.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HS="+srv.URL, "ROOM_ID="+roomID, fmt.Sprintf("ROUNDS=%d", rounds),
			"ALICE_TOKEN="+alice.Token, "ALICE_ID="+alice.UserID, "ALICE_DEVICE="+alice.Device,
			"BOB_TOKEN="+bob.Token, "BOB_ID="+bob.UserID, "BOB_DEVICE="+bob.Device)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("chat.mjs: %v\nstdout: %s\nstderr: %s", err, out, stderr)
		}
		var res struct {
			BobGot, AliceGot []string
			RoundTripsMs     []float64
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("chat.mjs printed %q: %v", out, err)
		}
		var pings, answers []string
		for i := range rounds {
			pings = append(pings, fmt.Sprintf("ping %d", i))
			answers = append(answers, fmt.Sprintf("re: ping %d", i))
		}
		if !slices.Equal(res.BobGot, pings) || !slices.Equal(res.AliceGot, answers) {
			t.Errorf("bob got %q, alice got %q; want %q and %q", res.BobGot, res.AliceGot, pings, answers)
		}
		t.Logf("round trips through two sync loops (ms): %v", res.RoundTripsMs)
	})
}
