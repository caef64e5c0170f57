package clientapi_test

import (
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// withGuests turns guest registration on.
func withGuests(c *config.Config) { c.Registration.Guests = true }

// registerGuest registers a guest account and returns its client.
func registerGuest(t *testing.T, srv *testserver.Server) *testserver.Client {
	t.Helper()
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	c := srv.Client(t)
	c.MustDo("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{}, &out)
	c.Token, c.UserID, c.Device = out.AccessToken, out.UserID, out.DeviceID
	return c
}

func membershipOf(t *testing.T, c *testserver.Client, roomID, userID string) string {
	t.Helper()
	var content map[string]any
	if st := c.Do("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.member/"+userID, nil, &content); st != 200 {
		return ""
	}
	m, _ := content["membership"].(string)
	return m
}

// TestGuestAccess: a guest joins only rooms whose guest_access is can_join, may read
// and set its profile there, and is made to leave when the room stops allowing
// guests.
func TestGuestAccess(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		guest := registerGuest(t, srv)
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})

		var e errBody
		if st := guest.Do("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
			t.Fatalf("guest joins a room without guest access = %d %s; want 403 M_FORBIDDEN", st, e.ErrCode)
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.guest_access", map[string]string{"guest_access": "can_join"}, nil)
		guest.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)

		var name map[string]any
		guest.MustDo("GET", "/_matrix/client/v3/profile/"+guest.UserID+"/displayname", nil, &name)
		guest.MustDo("PUT", "/_matrix/client/v3/profile/"+guest.UserID+"/displayname", map[string]string{"displayname": "creeper"}, nil)
		var member map[string]any
		guest.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.member/"+guest.UserID, nil, &member)
		if member["displayname"] != "creeper" {
			t.Errorf("guest's member event after a profile change = %v; want displayname creeper", member)
		}
		sendText(t, guest, room, "g1", "hello from a guest")

		// Revoking guest access makes the guest leave, before the change is answered;
		// a full member stays.
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.guest_access", map[string]string{"guest_access": "forbidden"}, nil)
		if m := membershipOf(t, alice, room, guest.UserID); m != "leave" {
			t.Errorf("guest's membership after guest access was revoked = %q; want leave", m)
		}
		if m := membershipOf(t, alice, room, alice.UserID); m != "join" {
			t.Errorf("owner's membership after guest access was revoked = %q; want join", m)
		}
		if st := guest.Do("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, &e); st != 403 {
			t.Errorf("guest rejoins after guest access was revoked = %d; want 403", st)
		}
	}, withGuests)
}

// TestGuestUpgrade: registering with a guest's access token turns that guest into a
// full account with the same user ID, which may then join any public room.
func TestGuestUpgrade(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		guest := registerGuest(t, srv)
		local := guest.UserID[1 : len(guest.UserID)-len(":localhost")]

		body := map[string]any{"username": local, "password": "SIR_Arthur_David", "guest_access_token": guest.Token}
		if st := srv.Client(t).Do("POST", "/_matrix/client/v3/register", body, nil); st != 401 {
			t.Fatalf("guest upgrade without auth = %d; want 401 (the auth stages)", st)
		}
		body["auth"] = map[string]string{"type": "m.login.dummy"}
		var sess struct {
			UserID      string `json:"user_id"`
			AccessToken string `json:"access_token"`
		}
		srv.Client(t).MustDo("POST", "/_matrix/client/v3/register", body, &sess)
		if sess.UserID != guest.UserID || sess.AccessToken == "" {
			t.Fatalf("guest upgrade = %+v; want a session for %s", sess, guest.UserID)
		}
		full := guest.WithToken(sess.AccessToken)
		var who map[string]any
		full.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, &who)
		if who["is_guest"] != false {
			t.Errorf("whoami after upgrade = %v; want is_guest false", who)
		}
		full.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		var login map[string]any
		srv.Client(t).MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": guest.UserID}, "password": "SIR_Arthur_David"}, &login)
	}, withGuests)
}
