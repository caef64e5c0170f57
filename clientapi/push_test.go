package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// unreadSync is the part of a /sync response the unread counts live in.
type unreadSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []event `json:"events"`
			} `json:"timeline"`
			Unread        *counts           `json:"unread_notifications"`
			UnreadThreads map[string]counts `json:"unread_thread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

type counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

func sendContent(t *testing.T, c *testserver.Client, roomID, txn string, content map[string]any) string {
	t.Helper()
	var out map[string]string
	c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn, content, &out)
	return out["event_id"]
}

// syncUntil long-polls /sync from since until ok accepts a response, and returns
// it: the counts arrive after the event itself (the evaluator runs off the send
// path), and each poll returns as soon as anything changes.
func syncUntil(t *testing.T, c *testserver.Client, since, filter string, ok func(unreadSync) bool) unreadSync {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		q := "timeout=2000"
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		if filter != "" {
			q += "&filter=" + url.QueryEscape(filter)
		}
		var resp unreadSync
		c.MustDo("GET", "/_matrix/client/v3/sync?"+q, nil, &resp)
		if ok(resp) {
			return resp
		}
		since = resp.NextBatch
	}
	t.Fatalf("%s: no sync response as wanted within 15s", c)
	return unreadSync{}
}

func roomCounts(roomID string, want counts) func(unreadSync) bool {
	return func(r unreadSync) bool {
		jr, ok := r.Rooms.Join[roomID]
		return ok && jr.Unread != nil && *jr.Unread == want
	}
}

func receipt(t *testing.T, c *testserver.Client, roomID, typ, eventID string, body map[string]any) {
	t.Helper()
	c.MustDo("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/%s/%s", url.PathEscape(roomID), typ, url.PathEscape(eventID)), body, nil)
}

// TestUnreadCountsInSync: a message in a 1:1 room and a mention in a group room
// reach the other members' unread counts in /sync; read receipts (public and
// private) reset them; threads are counted apart when the filter asks.
func TestUnreadCountsInSync(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		dm := createRoom(t, alice, map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID}})
		group := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(dm), map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(group), map[string]any{}, nil)
		carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(group), map[string]any{}, nil)

		first := syncUntil(t, bob, "", "", func(r unreadSync) bool { return r.Rooms.Join[dm].Unread != nil })
		if c := *first.Rooms.Join[dm].Unread; c != (counts{}) {
			t.Errorf("initial sync: dm counts = %+v; want zero", c)
		}

		// 1:1: every message notifies; no highlight.
		hello := sendText(t, alice, dm, "d1", "hello there")
		resp := syncUntil(t, bob, first.NextBatch, "", roomCounts(dm, counts{Notifications: 1}))
		// Group: a plain message notifies, a mention highlights; the sender's own
		// counts do not move.
		sendText(t, alice, group, "g1", "morning all")
		mention := sendContent(t, alice, group, "g2", map[string]any{"msgtype": "m.text", "body": "bob: look",
			"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
		resp = syncUntil(t, bob, resp.NextBatch, "", roomCounts(group, counts{Notifications: 2, Highlights: 1}))
		syncUntil(t, carol, "", "", roomCounts(group, counts{Notifications: 2}))
		syncUntil(t, alice, "", "", roomCounts(group, counts{}))

		// A read receipt resets the counts up to its event.
		receipt(t, bob, dm, "m.read", hello, map[string]any{})
		resp = syncUntil(t, bob, resp.NextBatch, "", roomCounts(dm, counts{}))
		receipt(t, bob, group, "m.read.private", mention, map[string]any{})
		resp = syncUntil(t, bob, resp.NextBatch, "", roomCounts(group, counts{}))

		// Threads: with unread_thread_notifications the thread is counted apart.
		root := sendText(t, alice, group, "g3", "thread root")
		reply := sendContent(t, alice, group, "g4", map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		threaded := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
		r := syncUntil(t, bob, resp.NextBatch, threaded, func(r unreadSync) bool {
			jr, ok := r.Rooms.Join[group]
			return ok && jr.Unread != nil && *jr.Unread == counts{Notifications: 1} && jr.UnreadThreads[root] == counts{Notifications: 1}
		})
		// Without the filter the room's count includes the thread.
		syncUntil(t, bob, "", "", roomCounts(group, counts{Notifications: 2}))
		// A receipt in the thread clears the thread only.
		receipt(t, bob, group, "m.read", reply, map[string]any{"thread_id": root})
		syncUntil(t, bob, r.NextBatch, threaded, func(r unreadSync) bool {
			jr, ok := r.Rooms.Join[group]
			return ok && jr.Unread != nil && *jr.Unread == counts{Notifications: 1} && len(jr.UnreadThreads) == 0
		})
		// An unthreaded receipt clears everything before it.
		receipt(t, bob, group, "m.read", reply, map[string]any{})
		syncUntil(t, bob, "", "", roomCounts(group, counts{}))
	})
}

type notificationsResp struct {
	NextToken     string `json:"next_token"`
	Notifications []struct {
		Actions []json.RawMessage `json:"actions"`
		Event   event             `json:"event"`
		Read    bool              `json:"read"`
		RoomID  string            `json:"room_id"`
		TS      int64             `json:"ts"`
	} `json:"notifications"`
}

// TestNotificationsEndpoint: GET /notifications lists the caller's
// notifications newest first, with read flags, only=highlight and pagination.
func TestNotificationsEndpoint(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(createRoom(t, alice, map[string]any{"preset": "public_chat"})), map[string]any{}, nil)
		var ids []string
		for i := range 5 {
			content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}
			if i%2 == 1 {
				content["m.mentions"] = map[string]any{"user_ids": []string{bob.UserID}}
			}
			ids = append(ids, sendContent(t, alice, room, fmt.Sprintf("n%d", i), content))
		}
		var all notificationsResp
		deadline := time.Now().Add(15 * time.Second)
		for len(all.Notifications) < 5 && time.Now().Before(deadline) {
			all = notificationsResp{}
			bob.MustDo("GET", "/_matrix/client/v3/notifications", nil, &all)
			if len(all.Notifications) < 5 {
				syncUntil(t, bob, "", "", func(unreadSync) bool { return true }) // let the evaluator catch up
			}
		}
		if len(all.Notifications) != 5 {
			t.Fatalf("GET /notifications: %d entries; want 5", len(all.Notifications))
		}
		for i, n := range all.Notifications {
			if want := ids[4-i]; n.Event.EventID != want || n.RoomID != room || n.Read || len(n.Actions) == 0 {
				t.Errorf("entry %d = %s in %s read %t actions %s; want %s unread with actions", i, n.Event.EventID, n.RoomID, n.Read, n.Actions, want)
			}
		}

		var hl notificationsResp
		bob.MustDo("GET", "/_matrix/client/v3/notifications?only=highlight", nil, &hl)
		if len(hl.Notifications) != 2 || hl.Notifications[0].Event.EventID != ids[3] || hl.Notifications[1].Event.EventID != ids[1] {
			t.Errorf("only=highlight gave %d entries; want the two mentions, newest first", len(hl.Notifications))
		}

		// Pages of two, following next_token, give all five once, in order.
		var paged []string
		from := ""
		for range 10 {
			var page notificationsResp
			path := "/_matrix/client/v3/notifications?limit=2"
			if from != "" {
				path += "&from=" + url.QueryEscape(from)
			}
			bob.MustDo("GET", path, nil, &page)
			for _, n := range page.Notifications {
				paged = append(paged, n.Event.EventID)
			}
			if page.NextToken == "" {
				break
			}
			from = page.NextToken
		}
		if fmt.Sprint(paged) != fmt.Sprint([]string{ids[4], ids[3], ids[2], ids[1], ids[0]}) {
			t.Errorf("paged = %v; want %v reversed", paged, ids)
		}

		// A receipt marks what it covers read.
		receipt(t, bob, room, "m.read", ids[2], map[string]any{})
		var after notificationsResp
		bob.MustDo("GET", "/_matrix/client/v3/notifications", nil, &after)
		for i, n := range after.Notifications {
			if want := i >= 2; n.Read != want {
				t.Errorf("after the receipt, entry %d (%s) read = %t; want %t", i, n.Event.EventID, n.Read, want)
			}
		}

		for _, q := range []string{"limit=x", "limit=-1", "only=everything", "from=notatoken"} {
			if status := bob.Do("GET", "/_matrix/client/v3/notifications?"+q, nil, nil); status != 400 {
				t.Errorf("GET /notifications?%s = %d; want 400", q, status)
			}
		}
	})
}

// TestUnreadCountsInSlidingSync: sliding sync carries the same counts, and a
// room comes back with new counts when only a receipt changed them.
func TestUnreadCountsInSlidingSync(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		body := map[string]any{"conn_id": "counts", "lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 10}}, "timeline_limit": 1}}}
		type roomCounts struct {
			Notifications *int `json:"notification_count"`
			Highlights    *int `json:"highlight_count"`
		}
		type resp struct {
			Pos   string                `json:"pos"`
			Rooms map[string]roomCounts `json:"rooms"`
		}
		var pos string
		until := func(want counts) {
			t.Helper()
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				q := "?timeout=2000"
				if pos != "" {
					q += "&pos=" + url.QueryEscape(pos)
				}
				var r resp
				bob.MustDo("POST", slidingPath+q, body, &r)
				pos = r.Pos
				if rc, ok := r.Rooms[room]; ok && rc.Notifications != nil && rc.Highlights != nil &&
					(counts{*rc.Notifications, *rc.Highlights}) == want {
					return
				}
			}
			t.Fatalf("sliding sync: room never came with counts %+v", want)
		}
		until(counts{})
		sendText(t, alice, room, "s1", "one")
		last := sendContent(t, alice, room, "s2", map[string]any{"msgtype": "m.text", "body": "two",
			"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
		until(counts{Notifications: 2, Highlights: 1})
		receipt(t, bob, room, "m.read", last, map[string]any{})
		until(counts{})
	})
}

// TestPushRulePathsAndActions: the kind listing, and the bad paths and actions
// Sytest's torture tests send, each a 400.
func TestPushRulePathsAndActions(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		alice.MustDo("PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape("!r:localhost"), map[string]any{"actions": []string{"notify"}}, nil)
		var rules []map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/pushrules/global/room/", nil, &rules)
		if len(rules) != 1 || rules[0]["rule_id"] != "!r:localhost" {
			t.Errorf("GET /pushrules/global/room/ = %v; want the one room rule", rules)
		}
		for _, c := range []struct{ method, path string }{
			{"PUT", "/"}, {"PUT", "/global"}, {"PUT", "/global/room"}, {"PUT", "/global/room/"},
			{"PUT", "/global/override/.m.rule.master/not_an_attr"},
			{"GET", "/global"}, {"GET", "/global/room"}, {"GET", "/not_a_scope/"}, {"GET", "/global/not_a_template/"},
			{"GET", "/global/override/.m.rule.master/not_an_attr"},
		} {
			if status := alice.Do(c.method, "/_matrix/client/v3/pushrules"+c.path, map[string]any{"actions": []string{"notify"}}, nil); status != 400 {
				t.Errorf("%s /pushrules%s = %d; want 400", c.method, c.path, status)
			}
		}
		for _, actions := range []any{[]string{"not_an_action"}, []any{map[string]any{"value": 1}}, []any{7}} {
			if status := alice.Do("PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape("!s:localhost"), map[string]any{"actions": actions}, nil); status != 400 {
				t.Errorf("PUT a rule with actions %v = %d; want 400", actions, status)
			}
		}
		if status := alice.Do("GET", "/_matrix/client/v3/pushrules", nil, nil); status != 404 {
			t.Errorf("GET /pushrules (no slash) = %d; want 404", status)
		}
	})
}
