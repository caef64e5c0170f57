package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

type presenceSync struct {
	NextBatch string `json:"next_batch"`
	Presence  struct {
		Events []struct {
			Sender  string         `json:"sender"`
			Content map[string]any `json:"content"`
		} `json:"events"`
	} `json:"presence"`
}

// of returns the presence events of sender in a sync response.
func (s presenceSync) of(sender string) []map[string]any {
	var out []map[string]any
	for _, e := range s.Presence.Events {
		if e.Sender == sender {
			out = append(out, e.Content)
		}
	}
	return out
}

// TestPresenceHiddenFromStrangers: whether someone is online, and since when, is
// for the people who share a room with them. A stranger asking is refused as
// Synapse refuses, and learns nothing, not even whether the user exists; someone
// who left the shared room is a stranger again. Room-mates and the user see it.
func TestPresenceHiddenFromStrangers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		dave := srv.Register(t, "dave", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		dave.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		dave.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)

		var bobFirst, carolFirst presenceSync
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &bobFirst)
		carol.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &carolFirst)
		alice.MustDo("PUT", "/_matrix/client/v3/presence/@alice:localhost/status", map[string]string{"presence": "unavailable", "status_msg": "at the dentist"}, nil)

		for _, tc := range []struct {
			who     string
			c       *testserver.Client
			subject string
			status  int
			errcode string
		}{
			{"a stranger", carol, "@alice:localhost", http.StatusForbidden, "M_FORBIDDEN"},
			{"a former room-mate", dave, "@alice:localhost", http.StatusForbidden, "M_FORBIDDEN"},
			{"a stranger, of a user who does not exist", carol, "@nobody:localhost", http.StatusForbidden, "M_FORBIDDEN"},
			{"a stranger, of a remote user", carol, "@x:elsewhere.example", http.StatusForbidden, "M_FORBIDDEN"},
			{"a room-mate", bob, "@alice:localhost", http.StatusOK, ""},
			{"the user", alice, "@alice:localhost", http.StatusOK, ""},
		} {
			var body struct {
				ErrCode   string `json:"errcode"`
				Error     string `json:"error"`
				Presence  string `json:"presence"`
				StatusMsg string `json:"status_msg"`
			}
			status := tc.c.Do("GET", "/_matrix/client/v3/presence/"+tc.subject+"/status", nil, &body)
			if status != tc.status || body.ErrCode != tc.errcode {
				t.Errorf("GET /presence/%s/status by %s = %d %s; want %d %s", tc.subject, tc.who, status, body.ErrCode, tc.status, tc.errcode)
			}
			if status == http.StatusForbidden && (body.Presence != "" || body.StatusMsg != "") {
				t.Errorf("GET /presence/%s/status by %s leaks %q %q", tc.subject, tc.who, body.Presence, body.StatusMsg)
			}
			if status == http.StatusOK && (body.Presence != "unavailable" || body.StatusMsg != "at the dentist") {
				t.Errorf("GET /presence/%s/status by %s = %q %q; want unavailable at the dentist", tc.subject, tc.who, body.Presence, body.StatusMsg)
			}
		}

		// Sync: bob's long-poll wakes with alice's presence; carol's sync, made
		// after, carries none of it.
		var bobNext presenceSync
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=10000&since="+bobFirst.NextBatch, nil, &bobNext)
		if got := bobNext.of("@alice:localhost"); len(got) == 0 || got[0]["status_msg"] != "at the dentist" {
			t.Errorf("bob's sync presence of alice = %v; want at the dentist", got)
		}
		var carolNext presenceSync
		carol.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+carolFirst.NextBatch, nil, &carolNext)
		if got := carolNext.of("@alice:localhost"); len(got) != 0 {
			t.Errorf("carol's sync carries alice's presence %v; want none", got)
		}
	})
}

// TestPresenceOptions: presence.visible_to: all lets anyone look a user up;
// presence.enabled: false drops presence, so even a room-mate sees offline and
// sync carries none.
func TestPresenceOptions(t *testing.T) {
	t.Parallel()
	t.Run("visible_to all", func(t *testing.T) {
		forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
			alice := srv.Register(t, "alice", "pw")
			carol := srv.Register(t, "carol", "pw")
			alice.MustDo("PUT", "/_matrix/client/v3/presence/@alice:localhost/status", map[string]string{"presence": "unavailable"}, nil)
			var st map[string]any
			if status := carol.Do("GET", "/_matrix/client/v3/presence/@alice:localhost/status", nil, &st); status != 200 || st["presence"] != "unavailable" {
				t.Errorf("GET alice's presence by a stranger with visible_to all = %d %v; want 200 unavailable", status, st)
			}
		}, func(c *config.Config) { c.Presence.VisibleTo = config.PresenceVisibleAll })
	})
	t.Run("disabled", func(t *testing.T) {
		forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
			alice := srv.Register(t, "alice", "pw")
			bob := srv.Register(t, "bob", "pw")
			roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
			bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
			var first presenceSync
			bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &first)
			alice.MustDo("PUT", "/_matrix/client/v3/presence/@alice:localhost/status", map[string]string{"presence": "unavailable", "status_msg": "away"}, nil)
			var st map[string]any
			if status := bob.Do("GET", "/_matrix/client/v3/presence/@alice:localhost/status", nil, &st); status != 200 || st["presence"] != "offline" || st["status_msg"] != nil {
				t.Errorf("GET alice's presence with presence disabled = %d %v; want 200 offline", status, st)
			}
			// A message moves the stream, so this sync returns at once; it must
			// carry no presence.
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/p1", map[string]any{"msgtype": "m.text", "body": "hi"}, nil)
			var next presenceSync
			bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=10000&since="+first.NextBatch, nil, &next)
			if len(next.Presence.Events) != 0 {
				t.Errorf("sync with presence disabled carries %+v; want no presence", next.Presence.Events)
			}
		}, func(c *config.Config) { c.Presence.Enabled = false })
	})
}
