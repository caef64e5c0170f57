package pusher_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/pusher"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// recorder is a push gateway stand-in on loopback that records every body.
type recorder struct {
	url string

	mu      sync.Mutex
	got     []map[string]any
	arrived chan struct{} // closed and replaced on every push
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{arrived: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var m map[string]any
		json.Unmarshal(body, &m)
		r.mu.Lock()
		r.got = append(r.got, m)
		close(r.arrived)
		r.arrived = make(chan struct{})
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + pusher.NotifyPath
	return r
}

// await returns the first push after index from that match says is the one,
// and the index after it; it fails the test after a deadline.
func (r *recorder) await(t *testing.T, from int, what string, match func(n map[string]any) bool) (map[string]any, int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		got, arrived := r.got, r.arrived
		r.mu.Unlock()
		for i := from; i < len(got); i++ {
			n, _ := got[i]["notification"].(map[string]any)
			if n != nil && match(n) {
				return n, i + 1
			}
		}
		select {
		case <-arrived:
		case <-deadline:
			t.Fatalf("no push %s arrived; got %v", what, got[from:])
		}
	}
}

func pushkeyOf(n map[string]any) string {
	devs, _ := n["devices"].([]any)
	if len(devs) == 0 {
		return ""
	}
	k, _ := devs[0].(map[string]any)["pushkey"].(string)
	return k
}

func unreadOf(n map[string]any) any {
	c, _ := n["counts"].(map[string]any)
	return c["unread"]
}

func setPusher(t *testing.T, c *testserver.Client, pushkey, gatewayURL, format string) {
	t.Helper()
	data := map[string]any{"url": gatewayURL}
	if format != "" {
		data["format"] = format
	}
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{
		"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "Example",
		"device_display_name": "Phone", "lang": "en", "data": data,
	}, nil)
}

var allowLoopback testserver.Option = func(c *config.Config) { c.Push.GatewayAllowCIDRs = "127.0.0.0/8,::1/128" }

func esc(s string) string { return url.PathEscape(s) }

// TestPushEndToEnd: a message in a 1:1 room and a mention in a group room reach
// the user's push gateway with the badge counting the rooms with unread
// notifications; read receipts bring it back to zero with counts-only pushes; an
// event_id_only pusher gets no content; a device's logout deletes its pushers.
func TestPushEndToEnd(t *testing.T) {
	for _, d := range storagetest.Engines() {
		t.Run(storagetest.Name(d), func(t *testing.T) {
			srv := testserver.Start(t, d, allowLoopback)
			gw := newRecorder(t)
			alice := srv.Register(t, "alice", "password-alice")
			bob := srv.Register(t, "bob", "password-bob")
			carol := srv.Register(t, "carol", "password-carol")

			var dm, group struct {
				RoomID string `json:"room_id"`
			}
			bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "invite": []string{alice.UserID}, "is_direct": true}, &dm)
			bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Group"}, &group)
			alice.MustDo("POST", "/_matrix/client/v3/join/"+esc(dm.RoomID), map[string]any{}, nil)
			alice.MustDo("POST", "/_matrix/client/v3/join/"+esc(group.RoomID), map[string]any{}, nil)
			carol.MustDo("POST", "/_matrix/client/v3/join/"+esc(group.RoomID), map[string]any{}, nil)

			setPusher(t, alice, "full", gw.url, "")
			setPusher(t, alice, "ids", gw.url, "event_id_only")

			var sent struct {
				EventID string `json:"event_id"`
			}
			bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(dm.RoomID)+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "hello in private"}, &sent)
			dmEvent := sent.EventID
			n, next := gw.await(t, 0, "of the 1:1 message", func(n map[string]any) bool { return n["event_id"] == dmEvent && pushkeyOf(n) == "full" })
			if n["type"] != "m.room.message" || n["sender"] != bob.UserID || n["room_id"] != dm.RoomID || unreadOf(n) != float64(1) {
				t.Errorf("1:1 push = %v; want bob's m.room.message in the DM with unread 1", n)
			}
			if c, _ := n["content"].(map[string]any); c["body"] != "hello in private" {
				t.Errorf("1:1 push content = %v; want the message", n["content"])
			}
			ids, _ := gw.await(t, 0, "event_id_only of the 1:1 message", func(n map[string]any) bool { return n["event_id"] == dmEvent && pushkeyOf(n) == "ids" })
			for _, k := range []string{"content", "type", "sender", "room_name"} {
				if ids[k] != nil {
					t.Errorf("event_id_only push carries %s = %v", k, ids[k])
				}
			}
			if ids["room_id"] != dm.RoomID || unreadOf(ids) != float64(1) {
				t.Errorf("event_id_only push = %v; want room_id and counts", ids)
			}

			bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(group.RoomID)+"/send/m.room.message/t2", map[string]any{
				"msgtype": "m.text", "body": "alice, look", "m.mentions": map[string]any{"user_ids": []string{alice.UserID}},
			}, &sent)
			groupEvent := sent.EventID
			n, next = gw.await(t, next, "of the group mention", func(n map[string]any) bool { return n["event_id"] == groupEvent && pushkeyOf(n) == "full" })
			if n["room_name"] != "Group" || n["prio"] != "high" || unreadOf(n) != float64(2) {
				t.Errorf("group mention push = %v; want room_name Group, prio high, unread 2 (two rooms)", n)
			}
			if tw, _ := n["devices"].([]any)[0].(map[string]any)["tweaks"].(map[string]any); tw["highlight"] != true {
				t.Errorf("group mention tweaks = %v; want highlight", tw)
			}

			alice.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(dm.RoomID)+"/receipt/m.read/"+esc(dmEvent), map[string]any{}, nil)
			_, next = gw.await(t, next, "of the badge after the first receipt", func(n map[string]any) bool {
				return n["event_id"] == nil && pushkeyOf(n) == "full" && unreadOf(n) == float64(1)
			})
			alice.MustDo("POST", "/_matrix/client/v3/rooms/"+esc(group.RoomID)+"/receipt/m.read/"+esc(groupEvent), map[string]any{}, nil)
			gw.await(t, next, "of the zero badge", func(n map[string]any) bool {
				return n["event_id"] == nil && pushkeyOf(n) == "full" && unreadOf(n) == float64(0)
			})

			// A second device's pusher goes with the device's logout.
			phone := srv.Client(t)
			var sess struct {
				AccessToken string `json:"access_token"`
			}
			phone.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password-alice"}, &sess)
			phone = phone.WithToken(sess.AccessToken)
			setPusher(t, phone, "phone", gw.url, "")
			if got := pushkeys(t, alice); len(got) != 3 {
				t.Fatalf("pushers before the logout = %v; want full, ids, phone", got)
			}
			phone.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, nil)
			if got := pushkeys(t, alice); len(got) != 2 || got[0] != "full" || got[1] != "ids" {
				t.Errorf("pushers after the phone's logout = %v; want full, ids", got)
			}
		})
	}
}

func pushkeys(t *testing.T, c *testserver.Client) []string {
	t.Helper()
	var out struct {
		Pushers []struct {
			PushKey string `json:"pushkey"`
		} `json:"pushers"`
	}
	c.MustDo("GET", "/_matrix/client/v3/pushers", nil, &out)
	var keys []string
	for _, p := range out.Pushers {
		keys = append(keys, p.PushKey)
	}
	return keys
}

// TestPushAfterGatewayOutage: messages sent while the user's push gateway is
// down reach it once it is back, all of them, in the order they were sent.
func TestPushAfterGatewayOutage(t *testing.T) {
	for _, d := range storagetest.Engines() {
		t.Run(storagetest.Name(d), func(t *testing.T) {
			srv := testserver.Start(t, d, allowLoopback)
			var mu sync.Mutex
			down, failed, delivered := true, make(chan struct{}, 100), make(chan struct{}, 100)
			var got []string
			gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				var body struct {
					Notification struct {
						EventID string `json:"event_id"`
					} `json:"notification"`
				}
				json.NewDecoder(req.Body).Decode(&body)
				mu.Lock()
				defer mu.Unlock()
				if down {
					select {
					case failed <- struct{}{}:
					default:
					}
					http.Error(w, "down", http.StatusServiceUnavailable)
					return
				}
				got = append(got, body.Notification.EventID)
				select {
				case delivered <- struct{}{}:
				default:
				}
				w.Write([]byte(`{}`))
			}))
			t.Cleanup(gw.Close)
			alice := srv.Register(t, "alice", "password-alice")
			bob := srv.Register(t, "bob", "password-bob")
			var dm struct {
				RoomID string `json:"room_id"`
			}
			bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "invite": []string{alice.UserID}}, &dm)
			alice.MustDo("POST", "/_matrix/client/v3/join/"+esc(dm.RoomID), map[string]any{}, nil)
			setPusher(t, alice, "k", gw.URL+pusher.NotifyPath, "event_id_only")
			var want []string
			for i := range 3 {
				var sent struct {
					EventID string `json:"event_id"`
				}
				bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+esc(dm.RoomID)+"/send/m.room.message/o"+strconv.Itoa(i), map[string]any{"msgtype": "m.text", "body": "while down"}, &sent)
				want = append(want, sent.EventID)
			}
			select {
			case <-failed:
			case <-time.After(20 * time.Second):
				t.Fatal("the gateway was never tried while down")
			}
			mu.Lock()
			down = false
			mu.Unlock()
			// Alice's own invite may notify her too; the messages must all arrive, in order.
			messages := func() []string {
				var out []string
				for _, e := range got {
					if slices.Contains(want, e) {
						out = append(out, e)
					}
				}
				return out
			}
			deadline := time.After(30 * time.Second)
			for {
				mu.Lock()
				msgs := messages()
				mu.Unlock()
				if len(msgs) >= 3 {
					if !slices.Equal(msgs, want) {
						t.Errorf("messages pushed after the outage = %v; want %v in order", msgs, want)
					}
					break
				}
				select {
				case <-delivered:
				case <-deadline:
					t.Fatalf("messages pushed after the outage = %v; want %v", msgs, want)
				}
			}
		})
	}
}
