package clientapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

type ephemeralSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Ephemeral struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"ephemeral"`
			AccountData struct {
				Events []event `json:"events"`
			} `json:"account_data"`
		} `json:"join"`
	} `json:"rooms"`
}

// waitEphemeral syncs until an ephemeral event of typ shows up in the room, for at
// most a few long-polls.
func waitEphemeral(t *testing.T, c *testserver.Client, roomID, since, typ string) (json.RawMessage, string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var s ephemeralSync
		c.MustDo("GET", "/_matrix/client/v3/sync?timeout=5000&since="+since, nil, &s)
		since = s.NextBatch
		for _, e := range s.Rooms.Join[roomID].Ephemeral.Events {
			if e.Type == typ {
				return e.Content, since
			}
		}
	}
	t.Fatalf("no %s in %s within 15s", typ, roomID)
	return nil, ""
}

func TestTypingReceiptsAndReadMarkers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		msg := sendText(t, alice, roomID, "1", "read me")
		var s ephemeralSync
		bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
		since := s.NextBatch

		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/@alice:localhost", map[string]any{"typing": true, "timeout": 30000}, nil)
		content, since := waitEphemeral(t, bob, roomID, since, "m.typing")
		var typing struct {
			UserIDs []string `json:"user_ids"`
		}
		json.Unmarshal(content, &typing)
		if len(typing.UserIDs) != 1 || typing.UserIDs[0] != "@alice:localhost" {
			t.Errorf("typing = %s; want alice", content)
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/@alice:localhost", map[string]any{"typing": false}, nil)
		content, _ = waitEphemeral(t, bob, roomID, since, "m.typing")
		json.Unmarshal(content, &typing)
		if len(typing.UserIDs) != 0 {
			t.Errorf("typing after stop = %s; want nobody", content)
		}

		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+msg, map[string]any{}, nil)
		content, _ = waitEphemeral(t, alice, roomID, "", "m.receipt")
		var rc map[string]map[string]map[string]struct {
			TS int64 `json:"ts"`
		}
		json.Unmarshal(content, &rc)
		if rc[msg]["m.read"]["@bob:localhost"].TS == 0 {
			t.Errorf("receipt = %s; want bob's m.read on %s", content, msg)
		}

		// A private receipt and the read marker reach only bob.
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/read_markers", map[string]string{"m.fully_read": msg, "m.read.private": msg}, nil)
		var as ephemeralSync
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &as)
		for _, e := range as.Rooms.Join[roomID].Ephemeral.Events {
			if e.Type == "m.receipt" && strings.Contains(string(e.Content), "m.read.private") {
				t.Errorf("alice sees bob's private receipt: %s", e.Content)
			}
		}
		var bs ephemeralSync
		bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &bs)
		var fullyRead bool
		for _, e := range bs.Rooms.Join[roomID].AccountData.Events {
			if e.Type == "m.fully_read" && e.Content["event_id"] == msg {
				fullyRead = true
			}
		}
		if !fullyRead {
			t.Errorf("bob's room account data lacks m.fully_read %s: %+v", msg, bs.Rooms.Join[roomID].AccountData.Events)
		}

		stranger := srv.Register(t, "stranger", "pw")
		cases := []struct {
			name     string
			c        *testserver.Client
			method   string
			path     string
			body     any
			status   int
			wantCode string
		}{
			{"typing for someone else", alice, "PUT", "/rooms/" + roomID + "/typing/@bob:localhost", `{"typing":true}`, 403, "M_FORBIDDEN"},
			{"typing without field", alice, "PUT", "/rooms/" + roomID + "/typing/@alice:localhost", `{}`, 400, "M_MISSING_PARAM"},
			{"typing outside the room", stranger, "PUT", "/rooms/" + roomID + "/typing/@stranger:localhost", `{"typing":true}`, 403, "M_FORBIDDEN"},
			{"unknown receipt type", bob, "POST", "/rooms/" + roomID + "/receipt/m.seen/" + msg, `{}`, 400, "M_INVALID_PARAM"},
			{"receipt for unknown event", bob, "POST", "/rooms/" + roomID + "/receipt/m.read/$nope", `{}`, 404, "M_NOT_FOUND"},
			{"receipt outside the room", stranger, "POST", "/rooms/" + roomID + "/receipt/m.read/" + msg, `{}`, 403, "M_FORBIDDEN"},
		}
		for _, tc := range cases {
			var e errBody
			if st := tc.c.Do(tc.method, "/_matrix/client/v3"+tc.path, tc.body, &e); st != tc.status || e.ErrCode != tc.wantCode {
				t.Errorf("%s = %d %s; want %d %s", tc.name, st, e.ErrCode, tc.status, tc.wantCode)
			}
		}
	})
}

func TestPresence(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		var first struct {
			NextBatch string `json:"next_batch"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &first)
		bob.MustDo("PUT", "/_matrix/client/v3/presence/@bob:localhost/status", map[string]string{"presence": "unavailable", "status_msg": "lunch"}, nil)
		carol.MustDo("PUT", "/_matrix/client/v3/presence/@carol:localhost/status", map[string]string{"presence": "online"}, nil)
		var s struct {
			Presence struct {
				Events []struct {
					Sender  string         `json:"sender"`
					Content map[string]any `json:"content"`
				} `json:"events"`
			} `json:"presence"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+first.NextBatch, nil, &s)
		var sawBob bool
		for _, e := range s.Presence.Events {
			if e.Sender == "@carol:localhost" {
				t.Error("alice sees presence of carol, with whom she shares no room")
			}
			if e.Sender == "@bob:localhost" && e.Content["presence"] == "unavailable" && e.Content["status_msg"] == "lunch" {
				sawBob = true
			}
		}
		if !sawBob {
			t.Errorf("alice's presence events = %+v; want bob unavailable at lunch", s.Presence.Events)
		}
		var st map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/presence/@bob:localhost/status", nil, &st)
		if st["presence"] != "unavailable" || st["status_msg"] != "lunch" || st["last_active_ago"] == nil {
			t.Errorf("bob's status = %v", st)
		}
		for _, tc := range []struct {
			c      *testserver.Client
			method string
			path   string
			body   string
			status int
			code   string
		}{
			{alice, "PUT", "/presence/@bob:localhost/status", `{"presence":"online"}`, 403, "M_FORBIDDEN"},
			{alice, "PUT", "/presence/@alice:localhost/status", `{"presence":"asleep"}`, 400, "M_INVALID_PARAM"},
			{alice, "PUT", "/presence/@alice:localhost/status", `{}`, 400, "M_MISSING_PARAM"},
			{alice, "GET", "/presence/@x:elsewhere/status", ``, 403, "M_FORBIDDEN"}, // shares no room with alice
		} {
			var e errBody
			if st := tc.c.Do(tc.method, "/_matrix/client/v3"+tc.path, tc.body, &e); st != tc.status || e.ErrCode != tc.code {
				t.Errorf("%s %s %s = %d %s; want %d %s", tc.method, tc.path, tc.body, st, e.ErrCode, tc.status, tc.code)
			}
		}
	})
}

func TestPushRules(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		var all struct {
			Global struct {
				Override  []map[string]any `json:"override"`
				Room      []map[string]any `json:"room"`
				Underride []map[string]any `json:"underride"`
			} `json:"global"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/pushrules/", nil, &all)
		if len(all.Global.Override) == 0 || all.Global.Override[0]["rule_id"] != ".m.rule.master" {
			t.Fatalf("default rules = %+v", all.Global.Override)
		}
		base := "/_matrix/client/v3/pushrules/global/"
		alice.MustDo("PUT", base+"room/!r:localhost", map[string]any{"actions": []any{"notify"}}, nil)
		alice.MustDo("PUT", base+"override/mine", map[string]any{"actions": []any{}, "conditions": []any{map[string]string{"kind": "event_match", "key": "type", "pattern": "x.y"}}}, nil)
		alice.MustDo("PUT", base+"override/first?before=mine", map[string]any{"actions": []any{}}, nil)
		alice.MustDo("PUT", base+"override/.m.rule.master/enabled", map[string]bool{"enabled": true}, nil)
		alice.MustDo("PUT", base+"underride/.m.rule.message/actions", map[string]any{"actions": []any{"dont_notify"}}, nil)
		alice.MustDo("GET", "/_matrix/client/v3/pushrules/", nil, &all)
		if ids := []any{all.Global.Override[0]["rule_id"], all.Global.Override[1]["rule_id"]}; ids[0] != "first" || ids[1] != "mine" {
			t.Errorf("override order = %v; want first, mine ahead of the defaults", ids)
		}
		if len(all.Global.Room) != 1 {
			t.Errorf("room rules = %v", all.Global.Room)
		}
		var enabled map[string]bool
		alice.MustDo("GET", base+"override/.m.rule.master/enabled", nil, &enabled)
		if !enabled["enabled"] {
			t.Error("master rule not enabled")
		}
		var actions map[string][]any
		alice.MustDo("GET", base+"underride/.m.rule.message/actions", nil, &actions)
		if len(actions["actions"]) != 1 || actions["actions"][0] != "dont_notify" {
			t.Errorf("message actions = %v", actions)
		}
		alice.MustDo("DELETE", base+"override/mine", nil, nil)

		// The rules reach clients through sync as m.push_rules account data.
		var s struct {
			AccountData struct {
				Events []event `json:"events"`
			} `json:"account_data"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
		found := false
		for _, e := range s.AccountData.Events {
			found = found || e.Type == "m.push_rules"
		}
		if !found {
			t.Error("sync lacks m.push_rules account data")
		}

		for _, tc := range []struct {
			method, path string
			body         any
			status       int
			code         string
		}{
			{"PUT", base + "override/.m.rule.custom", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", base + "sideways/x", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", "/_matrix/client/v3/pushrules/device/override/x", map[string]any{"actions": []any{}}, 400, "M_INVALID_PARAM"},
			{"PUT", base + "override/x", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"PUT", base + "content/x", map[string]any{"actions": []any{}}, 400, "M_MISSING_PARAM"},
			{"PUT", base + "override/y?before=nope", map[string]any{"actions": []any{}}, 404, "M_NOT_FOUND"},
			{"GET", base + "override/nope", nil, 404, "M_NOT_FOUND"},
			{"DELETE", base + "override/.m.rule.master", nil, 400, "M_INVALID_PARAM"},
			{"PUT", base + "override/.m.rule.master/enabled", map[string]any{}, 400, "M_MISSING_PARAM"},
		} {
			var e errBody
			if st := alice.Do(tc.method, tc.path, tc.body, &e); st != tc.status || e.ErrCode != tc.code {
				t.Errorf("%s %s = %d %s; want %d %s", tc.method, tc.path, st, e.ErrCode, tc.status, tc.code)
			}
		}
	})
}
