package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/bridges/webhook"
	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestWebhookEndToEnd: a webhook POST becomes a message a Matrix client sees,
// from the hook's virtual user; a wrong token posts nothing; the room's
// messages go to the hook's outgoing URL.
func TestWebhookEndToEnd(t *testing.T) {
	t.Parallel()
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			outgoing := make(chan map[string]string, 10)
			outLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			outSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var m map[string]string
				_ = json.NewDecoder(r.Body).Decode(&m)
				outgoing <- m
			}), ReadHeaderTimeout: 5 * time.Second}
			go outSrv.Serve(outLn)
			t.Cleanup(func() { outSrv.Close() })

			cfg := webhook.Config{ServerName: "localhost", Listen: ln.Addr().String(), OutgoingAllow: "127.0.0.1/32"}
			reg := webhook.NewRegistration(cfg)
			regFile := filepath.Join(t.TempDir(), "webhook-registration.yaml")
			if err := reg.Save(regFile); err != nil {
				t.Fatal(err)
			}
			srv := testserver.Start(t, d, func(c *config.Config) { c.AppServiceConfigFiles = []string{regFile} })
			alice := srv.Register(t, "alice", "pw-alice")
			var room struct {
				RoomID string `json:"room_id"`
			}
			alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)

			cfg.HomeserverURL = srv.URL
			cfg.Hooks = []webhook.Hook{{ID: "ci", Token: "ci-token-0123456789", RoomID: room.RoomID, DisplayName: "CI",
				OutgoingURL: "http://" + outLn.Addr().String() + "/out"}}
			b, err := webhook.New(cfg, reg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- b.Serve(ctx, ln) }()
			t.Cleanup(func() { cancel(); <-done })

			hook := "http://" + ln.Addr().String() + "/hooks/ci"
			post := func(url, token, contentType, body string) int {
				req, _ := http.NewRequest("POST", url, strings.NewReader(body))
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				req.Header.Set("Content-Type", contentType)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			for _, c := range []struct {
				name, url, token string
				want             int
			}{
				{"wrong token", hook, "ci-token-wrong-xxxxx", 401},
				{"no token", hook, "", 401},
				{"unknown hook", "http://" + ln.Addr().String() + "/hooks/cd", "ci-token-0123456789", 401},
			} {
				if got := post(c.url, c.token, "application/json", `{"text":"forged"}`); got != c.want {
					t.Errorf("%s: POST = %d; want %d", c.name, got, c.want)
				}
			}
			if got := post(hook, "ci-token-0123456789", "application/json", `{"text":"build 42 passed"}`); got != 200 {
				t.Fatalf("POST hook = %d; want 200", got)
			}
			if got := post(hook+"?token=ci-token-0123456789", "", "text/plain", "deployed"); got != 200 {
				t.Fatalf("POST plain text hook = %d; want 200", got)
			}
			var msgs struct {
				Chunk []struct {
					Sender  string         `json:"sender"`
					Type    string         `json:"type"`
					Content map[string]any `json:"content"`
				} `json:"chunk"`
			}
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room.RoomID+"/messages?dir=b&limit=20", nil, &msgs)
			var bodies []string
			for _, ev := range msgs.Chunk {
				if ev.Type == "m.room.message" {
					if ev.Sender != "@webhook_ci:localhost" {
						t.Errorf("message %q from %s; want @webhook_ci:localhost", ev.Content["body"], ev.Sender)
					}
					body, _ := ev.Content["body"].(string)
					bodies = append(bodies, body)
				}
			}
			if strings.Join(bodies, "|") != "deployed|build 42 passed" {
				t.Errorf("room messages (newest first) = %q; want the two posted, not the forged one", bodies)
			}

			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/o1",
				map[string]string{"msgtype": "m.text", "body": "roll back please"}, nil)
			select {
			case m := <-outgoing:
				if m["text"] != "roll back please" || m["sender"] != "@alice:localhost" || m["hook"] != "ci" {
					t.Errorf("outgoing = %v; want alice's message for hook ci", m)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the room's message never reached the outgoing URL")
			}
			select {
			case m := <-outgoing:
				if !bytes.Contains([]byte(m["sender"]), []byte("alice")) {
					t.Errorf("the bridge's own message went out: %v", m)
				}
			default:
			}
		})
	}
}
