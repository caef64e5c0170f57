package clientapi_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestMatrixJSSDKChat runs two matrix-js-sdk clients (testdata/jssdk, installed by
// scripts/test.sh with npm ci) whose sync loops chat in real time: every ping Alice
// sends reaches Bob's loop, whose answer reaches Alice's, in order.
func TestMatrixJSSDKChat(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)

		const rounds = 5
		var res struct {
			BobGot, AliceGot []string
			RoundTripsMs     []float64
		}
		runJSSDK(t, "chat.mjs", &res, "HS="+srv.URL, "ROOM_ID="+roomID, fmt.Sprintf("ROUNDS=%d", rounds),
			"ALICE_TOKEN="+alice.Token, "ALICE_ID="+alice.UserID, "ALICE_DEVICE="+alice.Device,
			"BOB_TOKEN="+bob.Token, "BOB_ID="+bob.UserID, "BOB_DEVICE="+bob.Device)
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

// runJSSDK runs a script of testdata/jssdk with node and env added to the
// environment, and decodes the JSON line it prints into out.
func runJSSDK(t *testing.T, script string, out any, env ...string) {
	t.Helper()
	dir := filepath.Join("testdata", "jssdk")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err != nil {
		t.Fatalf("matrix-js-sdk is not installed: run scripts/test.sh, or npm ci in %s", dir)
	}
	cmd := exec.Command("node", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", script, err, stdout, stderr)
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		t.Fatalf("%s printed %q: %v", script, stdout, err)
	}
}

// TestMatrixJSSDKImage: matrix-js-sdk uploads an image and sends it as m.image; the
// other user's client receives the event and downloads the image and its thumbnail
// through authenticated media.
func TestMatrixJSSDKImage(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)

		img := image.NewRGBA(image.Rect(0, 0, 300, 200))
		for y := range 200 {
			for x := range 300 {
				img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "pattern.png")
		if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		var res struct {
			URL, SHA256, ThumbnailType, Thumbnail string
		}
		runJSSDK(t, "media.mjs", &res, "HS="+srv.URL, "ROOM_ID="+roomID, "IMAGE_PATH="+path, "IMAGE_W=300", "IMAGE_H=200",
			"ALICE_TOKEN="+alice.Token, "ALICE_ID="+alice.UserID, "ALICE_DEVICE="+alice.Device,
			"BOB_TOKEN="+bob.Token, "BOB_ID="+bob.UserID, "BOB_DEVICE="+bob.Device)
		sum := sha256.Sum256(buf.Bytes())
		if res.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("bob downloaded content with SHA-256 %s; want %x", res.SHA256, sum)
		}
		thumb, err := base64.StdEncoding.DecodeString(res.Thumbnail)
		if err != nil {
			t.Fatal(err)
		}
		cfg, format, err := image.DecodeConfig(bytes.NewReader(thumb))
		if err != nil || format != "png" || res.ThumbnailType != "image/png" || cfg.Width != 96 || cfg.Height != 96 {
			t.Errorf("thumbnail: %s %s %d × %d (%v); want a 96 × 96 PNG", res.ThumbnailType, format, cfg.Width, cfg.Height, err)
		}
		if !strings.HasPrefix(res.URL, "mxc://localhost/") {
			t.Errorf("m.image url = %q", res.URL)
		}
	})
}
