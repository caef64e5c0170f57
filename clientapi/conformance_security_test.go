package clientapi_test

import (
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestWhoisIsForAdminsAndSelf: /admin/whois shows a user's devices and where they
// were seen to a server admin and to the user themself; anyone else is refused, and
// an anonymous caller is not let in at all.
func TestWhoisIsForAdminsAndSelf(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		admin := sharedSecretRegister(t, srv, "root", "pw-root", true)
		alice := srv.Register(t, "alice", "pw")
		eve := srv.Register(t, "eve", "pw")
		type whois struct {
			UserID  string `json:"user_id"`
			Devices map[string]struct {
				Sessions []struct {
					Connections []struct {
						IP       string `json:"ip"`
						LastSeen int64  `json:"last_seen"`
					} `json:"connections"`
				} `json:"sessions"`
			} `json:"devices"`
		}
		path := "/_matrix/client/v3/admin/whois/" + alice.UserID
		for _, c := range []*testserver.Client{admin, alice} {
			var w whois
			c.MustDo("GET", path, nil, &w)
			d, ok := w.Devices[alice.Device]
			if w.UserID != alice.UserID || !ok || len(d.Sessions) != 1 || len(d.Sessions[0].Connections) != 1 || d.Sessions[0].Connections[0].IP == "" {
				t.Errorf("whois by %s = %+v; want alice's device with its connection", c.UserID, w)
			}
		}
		var e errBody
		if st := eve.Do("GET", path, nil, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
			t.Errorf("whois by another user = %d %s; want 403 M_FORBIDDEN", st, e.ErrCode)
		}
		if st := srv.Client(t).Do("GET", path, nil, &e); st != 401 {
			t.Errorf("whois without a token = %d; want 401", st)
		}
		if st := admin.Do("GET", "/_matrix/client/v3/admin/whois/@nobody:localhost", nil, &e); st != 404 {
			t.Errorf("whois of an unknown user = %d; want 404", st)
		}
	}, func(c *config.Config) { c.Registration.SharedSecret = "let-me-in" })
}

// TestContextRefusesStrangers: /context in a room that is not world-readable is
// refused (403) to a user who was never in it, before the event is looked up; a
// world-readable one answers them.
func TestContextRefusesStrangers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		eve := srv.Register(t, "eve", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		msg := sendText(t, alice, room, "m1", "hello, world")
		var e errBody
		for _, id := range []string{msg, "$unknown"} {
			if st := eve.Do("GET", "/_matrix/client/v3/rooms/"+room+"/context/"+id, nil, &e); st != 403 || e.ErrCode != "M_FORBIDDEN" {
				t.Errorf("stranger's /context of %s = %d %s; want 403 M_FORBIDDEN", id, st, e.ErrCode)
			}
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.history_visibility", map[string]string{"history_visibility": "world_readable"}, nil)
		open := sendText(t, alice, room, "m2", "for everyone")
		eve.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/context/"+open, nil, nil)
	})
}
