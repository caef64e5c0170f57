package clientapi_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestNotificationsOutsiders: /notifications needs a token, and lists only the
// caller's own notifications: carol, in the same room, never sees bob's (his
// mention), and a user in no room sees none; a bad token is refused.
func TestNotificationsOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		mallory := srv.Register(t, "mallory", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID, carol.UserID}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		mention := sendContent(t, alice, room, "m1", map[string]any{"msgtype": "m.text", "body": "secret for bob",
			"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})

		var bobs notificationsResp
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			bobs = notificationsResp{}
			bob.MustDo("GET", "/_matrix/client/v3/notifications?only=highlight", nil, &bobs)
			if len(bobs.Notifications) > 0 {
				break
			}
			syncUntil(t, bob, "", "", func(unreadSync) bool { return true })
		}
		if len(bobs.Notifications) != 1 || bobs.Notifications[0].Event.EventID != mention {
			t.Fatalf("bob's highlights = %d entries; want his mention", len(bobs.Notifications))
		}
		var carols notificationsResp
		carol.MustDo("GET", "/_matrix/client/v3/notifications?only=highlight", nil, &carols)
		if len(carols.Notifications) != 0 {
			t.Errorf("carol's highlights = %d entries; want none (the mention was bob's)", len(carols.Notifications))
		}
		// Her own entry for the same event carries her rule's actions (a plain
		// group message), never bob's highlight, whatever position she pages from.
		carols = notificationsResp{}
		carol.MustDo("GET", "/_matrix/client/v3/notifications?from=999999999", nil, &carols)
		for _, n := range carols.Notifications {
			for _, a := range n.Actions {
				if strings.Contains(string(a), "highlight") {
					t.Errorf("carol's entry for %s has actions %s; bob's highlight leaked", n.Event.EventID, n.Actions)
				}
			}
		}
		var mallorys notificationsResp
		mallory.MustDo("GET", "/_matrix/client/v3/notifications", nil, &mallorys)
		if len(mallorys.Notifications) != 0 {
			t.Errorf("mallory (in no room) sees %d notifications; want none", len(mallorys.Notifications))
		}
		anon := srv.Client(t)
		if status := anon.Do("GET", "/_matrix/client/v3/notifications", nil, nil); status != 401 {
			t.Errorf("unauthenticated GET /notifications = %d; want 401", status)
		}
		if status := bob.WithToken("not-a-token").Do("GET", "/_matrix/client/v3/notifications", nil, nil); status != 401 {
			t.Errorf("GET /notifications with a bad token = %d; want 401", status)
		}
	})
}
