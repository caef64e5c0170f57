package appservice_test

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native/sdk"
)

// TestInviteAsksTheServiceAboutItsUsers: an invite to an unknown local user in a
// service's namespace asks the service (GET /users/{userId}) before it is built,
// whichever front-end sends it (the rule is the room engine's), so the service can
// create the user on demand; a user outside every namespace is never asked about.
func TestInviteAsksTheServiceAboutItsUsers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		b := newBridge(t, "q", "qbridge", "")
		var mu sync.Mutex
		asked := map[string]int{}
		b.onUserQuery = func(userID string) bool {
			userID, _ = url.PathUnescape(userID)
			mu.Lock()
			asked[userID]++
			mu.Unlock()
			// Registering from inside the query, as bridges do.
			return b.AS.Intent(id.UserID(userID)).EnsureRegistered(context.Background()) == nil
		}
		srv := testserver.Start(t, d, withBridges(b))
		b.connect(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		alice := srv.Register(t, "alice", "pw")
		var room struct {
			RoomID string `json:"room_id"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}, &room)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+room.RoomID+"/invite", map[string]string{"user_id": "@q_http:localhost"}, nil)

		nat, err := sdk.Dial(ctx, sdk.Options{Addr: srv.NativeAddr, Token: alice.Token, NoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		defer nat.Close()
		if err := nat.Invite(ctx, room.RoomID, "@q_native:localhost"); err != nil {
			t.Fatalf("native invite: %v", err)
		}
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+room.RoomID+"/invite", map[string]string{"user_id": "@stranger:localhost"}, nil)

		mu.Lock()
		defer mu.Unlock()
		for _, u := range []string{"@q_http:localhost", "@q_native:localhost"} {
			if asked[u] != 1 {
				t.Errorf("service asked about %s %d times; want once, before the invite", u, asked[u])
			}
			var p map[string]any
			if st := srv.Client(t).Do("GET", "/_matrix/client/v3/profile/"+url.PathEscape(u), nil, &p); st != 200 {
				t.Errorf("profile of %s after the invite = %d; want the user created by the service", u, st)
			}
		}
		if asked["@stranger:localhost"] != 0 {
			t.Errorf("service asked about a user outside its namespace")
		}
	})
}
