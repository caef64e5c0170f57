package clientapi_test

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestRoomSummary covers GET /v1/room_summary (spec v1.15): members and
// invitees see any room, anyone sees a discoverable one (also anonymously, and
// by alias), and a private room is M_NOT_FOUND to outsiders so that the answer
// does not even confirm it exists.
func TestRoomSummary(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		public := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Lobby", "topic": "all welcome", "room_alias_name": "lobby"})
		private := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "Secret",
			"initial_state": []map[string]any{{"type": "m.room.encryption", "state_key": "", "content": map[string]string{"algorithm": "m.megolm.v1.aes-sha2"}}}})
		anon := srv.Client(t)

		type summary struct {
			RoomID      string `json:"room_id"`
			Name        string `json:"name"`
			Topic       string `json:"topic"`
			JoinRule    string `json:"join_rule"`
			Members     int    `json:"num_joined_members"`
			RoomVersion string `json:"room_version"`
			Encryption  string `json:"encryption"`
			Membership  string `json:"membership"`
		}
		var s summary
		alice.MustDo("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(private), nil, &s)
		if s.RoomID != private || s.Name != "Secret" || s.Encryption != "m.megolm.v1.aes-sha2" || s.Membership != "join" || s.RoomVersion == "" || s.JoinRule != "invite" {
			t.Errorf("member's summary of the private room = %+v", s)
		}
		s = summary{}
		anon.MustDo("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("#lobby:localhost"), nil, &s)
		if s.RoomID != public || s.Topic != "all welcome" || s.Members != 1 || s.Membership != "" {
			t.Errorf("anonymous summary of the public room by alias = %+v", s)
		}

		for _, c := range []struct {
			name    string
			client  *testserver.Client
			target  string
			status  int
			errcode string
		}{
			{"outsider, private room", bob, private, 404, "M_NOT_FOUND"},
			{"anonymous, private room", anon, private, 404, "M_NOT_FOUND"},
			{"unknown room", bob, "!nowhere:localhost", 404, "M_NOT_FOUND"},
			{"unknown alias", bob, "#nowhere:localhost", 404, "M_NOT_FOUND"},
			{"neither ID nor alias", bob, "lobby", 400, "M_INVALID_PARAM"},
		} {
			status, body := c.client.Raw("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(c.target), nil)
			var e errBody
			json.Unmarshal(body, &e)
			if status != c.status || e.ErrCode != c.errcode {
				t.Errorf("%s: %d %s; want %d %s", c.name, status, body, c.status, c.errcode)
			}
		}

		// An invitee may look before accepting.
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+private+"/invite", map[string]string{"user_id": bob.UserID}, nil)
		s = summary{}
		bob.MustDo("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(private), nil, &s)
		if s.Name != "Secret" || s.Membership != "invite" {
			t.Errorf("invitee's summary = %+v; want the room, membership invite", s)
		}
	})
}

// TestMutualRooms covers GET /v1/mutual_rooms: only rooms both users are joined
// to, never a room one of them merely was invited to or left.
func TestMutualRooms(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		shared := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		left := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		invited := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+shared, map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+left, map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+left+"/leave", map[string]any{}, nil)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+invited+"/invite", map[string]string{"user_id": bob.UserID}, nil)

		var res struct {
			Joined    []string `json:"joined"`
			Count     int      `json:"count"`
			NextBatch string   `json:"next_batch"`
		}
		bob.MustDo("GET", "/_matrix/client/v1/mutual_rooms?user_id="+url.QueryEscape(alice.UserID), nil, &res)
		if len(res.Joined) != 1 || res.Joined[0] != shared || res.Count != 1 || res.NextBatch != "" {
			t.Errorf("bob's mutual rooms with alice = %+v; want only %s", res, shared)
		}
		carol.MustDo("GET", "/_matrix/client/v1/mutual_rooms?user_id="+url.QueryEscape(alice.UserID), nil, &res)
		if len(res.Joined) != 0 || res.Count != 0 {
			t.Errorf("carol's mutual rooms with alice = %+v; want none", res)
		}
		for _, c := range []struct {
			name    string
			client  *testserver.Client
			query   string
			status  int
			errcode string
		}{
			{"anonymous", srv.Client(t), "?user_id=" + url.QueryEscape(alice.UserID), 401, "M_MISSING_TOKEN"},
			{"no user", bob, "", 400, "M_MISSING_PARAM"},
			{"own ID", bob, "?user_id=" + url.QueryEscape(bob.UserID), 400, "M_INVALID_PARAM"},
			{"not a user ID", bob, "?user_id=alice", 400, "M_INVALID_PARAM"},
			{"bad token", bob, "?user_id=" + url.QueryEscape(alice.UserID) + "&from=nonsense", 400, "M_INVALID_PARAM"},
		} {
			status, body := c.client.Raw("GET", "/_matrix/client/v1/mutual_rooms"+c.query, nil)
			var e errBody
			json.Unmarshal(body, &e)
			if status != c.status || e.ErrCode != c.errcode {
				t.Errorf("%s: %d %s; want %d %s", c.name, status, body, c.status, c.errcode)
			}
		}
	})
}

// TestReportUser covers POST /v3/users/{userId}/report (spec v1.14).
func TestReportUser(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		path := "/_matrix/client/v3/users/" + url.PathEscape(bob.UserID) + "/report"
		alice.MustDo("POST", path, map[string]string{"reason": "spam"}, nil)
		alice.MustDo("POST", "/_matrix/client/v3/users/"+url.PathEscape("@someone:elsewhere.example")+"/report", map[string]string{"reason": ""}, nil)
		for _, c := range []struct {
			name    string
			client  *testserver.Client
			path    string
			body    any
			status  int
			errcode string
		}{
			{"anonymous", srv.Client(t), path, map[string]string{"reason": "x"}, 401, "M_MISSING_TOKEN"},
			{"unknown local user", alice, "/_matrix/client/v3/users/" + url.PathEscape("@ghost:localhost") + "/report", map[string]string{"reason": "x"}, 404, "M_NOT_FOUND"},
			{"no reason", alice, path, map[string]string{}, 400, "M_MISSING_PARAM"},
			{"not a user ID", alice, "/_matrix/client/v3/users/bob/report", map[string]string{"reason": "x"}, 400, "M_INVALID_PARAM"},
		} {
			status, body := c.client.Raw("POST", c.path, c.body)
			var e errBody
			json.Unmarshal(body, &e)
			if status != c.status || e.ErrCode != c.errcode {
				t.Errorf("%s: %d %s; want %d %s", c.name, status, body, c.status, c.errcode)
			}
		}
	})
}

// TestWellKnownSupport covers /.well-known/matrix/support: 404 until configured,
// then the contacts and page.
func TestWellKnownSupport(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "sqlite")
	if status, body := srv.Client(t).Raw("GET", "/.well-known/matrix/support", nil); status != 404 {
		t.Errorf("unconfigured support = %d %s; want 404", status, body)
	}
	srv = testserver.Start(t, "sqlite", func(c *config.Config) {
		c.Support = config.Support{Page: "https://example.org/help", Contacts: []config.SupportContact{{Role: "m.role.admin", MatrixID: "@admin:localhost"}}}
	})
	var doc struct {
		Contacts []struct {
			Role     string  `json:"role"`
			MatrixID string  `json:"matrix_id"`
			Email    *string `json:"email_address"`
		} `json:"contacts"`
		Page string `json:"support_page"`
	}
	srv.Client(t).MustDo("GET", "/.well-known/matrix/support", nil, &doc)
	if doc.Page != "https://example.org/help" || len(doc.Contacts) != 1 || doc.Contacts[0].MatrixID != "@admin:localhost" || doc.Contacts[0].Email != nil {
		t.Errorf("support = %+v", doc)
	}
}
