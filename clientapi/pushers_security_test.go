package clientapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/outbound/outboundtest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

func pusherBody(pushkey, url string) map[string]any {
	return map[string]any{"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "Example",
		"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": url}}
}

// TestPushersRefuseOutsiders: /pushers and /pushers/set need an access token, and
// a user sees and deletes only their own pushers.
func TestPushersRefuseOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		alice.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("alices-key", "https://push.example.org/_matrix/push/v1/notify"), nil)
		anon := srv.Client(t)
		forged := anon.WithToken("syt_not_a_token")
		for _, tc := range []struct {
			who     string
			c       *testserver.Client
			method  string
			path    string
			body    any
			status  int
			errcode string
		}{
			{"no token", anon, "GET", "/pushers", nil, http.StatusUnauthorized, "M_MISSING_TOKEN"},
			{"no token", anon, "POST", "/pushers/set", pusherBody("k", "https://push.example.org/_matrix/push/v1/notify"), http.StatusUnauthorized, "M_MISSING_TOKEN"},
			{"a forged token", forged, "GET", "/pushers", nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN"},
			{"a forged token", forged, "POST", "/pushers/set", pusherBody("k", "https://push.example.org/_matrix/push/v1/notify"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN"},
			{"bad JSON", bob, "POST", "/pushers/set", "{", http.StatusBadRequest, "M_NOT_JSON"},
			{"no url", bob, "POST", "/pushers/set", map[string]any{"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A",
				"device_display_name": "D", "lang": "en", "data": map[string]any{}}, http.StatusBadRequest, "M_MISSING_PARAM"},
			{"wrong path", bob, "POST", "/pushers/set", pusherBody("k", "https://push.example.org/notify"), http.StatusBadRequest, "M_INVALID_PARAM"},
		} {
			var e errBody
			if status := tc.c.Do(tc.method, "/_matrix/client/v3"+tc.path, tc.body, &e); status != tc.status || e.ErrCode != tc.errcode {
				t.Errorf("%s: %s %s = %d %s; want %d %s", tc.who, tc.method, tc.path, status, e.ErrCode, tc.status, tc.errcode)
			}
		}
		// Bob's kind:null for alice's app ID and pushkey deletes bob's (none), not hers.
		bob.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "alices-key"}, nil)
		var list struct {
			Pushers []map[string]any `json:"pushers"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/pushers", nil, &list)
		if len(list.Pushers) != 0 {
			t.Errorf("bob's /pushers = %v; want none (alice's are hers)", list.Pushers)
		}
		alice.MustDo("GET", "/_matrix/client/v3/pushers", nil, &list)
		if len(list.Pushers) != 1 || list.Pushers[0]["pushkey"] != "alices-key" {
			t.Errorf("alice's /pushers after bob's delete = %v; want her pusher", list.Pushers)
		}
	})
}

// TestPusherURLInwardRefused: by default a pusher may not point at loopback or a
// private address (its URL comes from a user, the request from the server): the
// set is refused, and nothing is ever dialled there.
func TestPusherURLInwardRefused(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		watched := outboundtest.Watch(t, "tcp4", "127.0.0.1")
		for _, url := range []string{
			"http://" + watched.Addr + "/_matrix/push/v1/notify",
			"http://localhost:" + itoa(watched.Port()) + "/_matrix/push/v1/notify",
			"http://[::1]:" + itoa(watched.Port()) + "/_matrix/push/v1/notify",
			"http://10.0.0.1/_matrix/push/v1/notify",
			"http://169.254.169.254/_matrix/push/v1/notify",
		} {
			var e errBody
			if status := alice.Do("POST", "/_matrix/client/v3/pushers/set", pusherBody("k", url), &e); status != http.StatusBadRequest || e.ErrCode != "M_INVALID_PARAM" {
				t.Errorf("POST /pushers/set with url %s = %d %s; want 400 M_INVALID_PARAM", url, status, e.ErrCode)
			}
		}
		// Give the server something to push, so a pusher that slipped through
		// would be dialled.
		roomID := createRoom(t, bob, map[string]any{"preset": "trusted_private_chat", "invite": []string{alice.UserID}})
		alice.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		sendText(t, bob, roomID, "t1", "hello")
		if g := srv.PushGuard; g.Dials() != 0 {
			t.Errorf("push guard dials = %d; want 0", g.Dials())
		}
		if n := watched.Accepted(t); n != 0 {
			t.Errorf("the loopback listener accepted %d connections; want 0", n)
		}
	})
}

// TestNoPushesFromRoomsNotSeen: a user with a pusher is never pushed about a
// room they are not in, even when its messages name them; the push about the
// room they share arrives, and is the first they get.
func TestNoPushesFromRoomsNotSeen(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		var mu sync.Mutex
		var got []string // room IDs, then the event ID after a space
		arrived := make(chan struct{}, 100)
		gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			var m struct {
				Notification struct {
					RoomID  string `json:"room_id"`
					EventID string `json:"event_id"`
				} `json:"notification"`
			}
			json.Unmarshal(body, &m)
			mu.Lock()
			got = append(got, m.Notification.RoomID+" "+m.Notification.EventID)
			mu.Unlock()
			arrived <- struct{}{}
			w.Write([]byte(`{}`))
		}))
		defer gw.Close()
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		mallory := srv.Register(t, "mallory", "pw")
		mallory.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("k", gw.URL+"/_matrix/push/v1/notify"), nil)
		secret := createRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+secret, map[string]any{}, nil)
		shared := createRoom(t, bob, map[string]any{"preset": "trusted_private_chat", "invite": []string{mallory.UserID}})
		mallory.MustDo("POST", "/_matrix/client/v3/join/"+shared, map[string]any{}, nil)
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+secret+"/send/m.room.message/s1", map[string]any{
			"msgtype": "m.text", "body": "mallory " + mallory.UserID, "m.mentions": map[string]any{"user_ids": []string{mallory.UserID}}}, nil)
		last := sendText(t, bob, shared, "s2", "hi mallory")
		// Notifications are decided and pushed in event order: once the push of
		// the last message arrived, the secret one was decided on.
		deadline := time.After(20 * time.Second)
		for done := false; !done; {
			select {
			case <-arrived:
			case <-deadline:
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("no push of %s arrived; got %v", last, got)
			}
			mu.Lock()
			done = slices.Contains(got, shared+" "+last)
			mu.Unlock()
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range got {
			if !strings.HasPrefix(r, shared+" ") {
				t.Errorf("mallory was pushed %q; want only pushes about %s", r, shared)
			}
		}
	}, func(c *config.Config) { c.Push.GatewayAllowCIDRs = "127.0.0.0/8" })
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
