package federation_test

import (
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// forEachEngine runs fn on every configured database engine, in parallel.
func forEachEngine(t *testing.T, fn func(t *testing.T, d storage.Dialect)) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, d)
		})
	}
}

type event struct {
	EventID string         `json:"event_id"`
	Type    string         `json:"type"`
	Sender  string         `json:"sender"`
	Content map[string]any `json:"content"`
}

// waitFor polls until cond holds, for at most 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bodies returns the message bodies of the room's latest 50 events, oldest first.
func bodies(t *testing.T, c *testserver.Client, roomID string) []string {
	t.Helper()
	var page struct {
		Chunk []event `json:"chunk"`
	}
	c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil, &page)
	var out []string
	for i := len(page.Chunk) - 1; i >= 0; i-- {
		if b, ok := page.Chunk[i].Content["body"].(string); ok && page.Chunk[i].Type == "m.room.message" {
			out = append(out, b)
		}
	}
	return out
}

func send(t *testing.T, c *testserver.Client, roomID, txn, body string) string {
	t.Helper()
	var out map[string]string
	c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn,
		map[string]string{"msgtype": "m.text", "body": body}, &out)
	return out["event_id"]
}

// TestTwoServersChat: a user of server B joins a room hosted on server A through
// federation, and the two talk both ways — messages, typing, read receipts.
func TestTwoServersChat(t *testing.T) {
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")

		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Across"}, &created)
		room := created["room_id"]
		send(t, alice, room, "a0", "before bob came")

		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		// B now knows the room's state, including its name and alice.
		var name map[string]string
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name", nil, &name)
		if name["name"] != "Across" {
			t.Errorf("room name on B = %v", name)
		}
		var members struct {
			Joined map[string]any `json:"joined"`
		}
		waitFor(t, "A to see bob joined", func() bool {
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &members)
			return members.Joined[bob.UserID] != nil
		})

		send(t, bob, room, "b1", "hello from B")
		waitFor(t, "alice to get bob's message", func() bool { return slices.Contains(bodies(t, alice, room), "hello from B") })
		send(t, alice, room, "a1", "hello from A")
		waitFor(t, "bob to get alice's message", func() bool { return slices.Contains(bodies(t, bob, room), "hello from A") })

		// Order is the same on both sides.
		want := []string{"hello from B", "hello from A"}
		for _, c := range []*testserver.Client{alice, bob} {
			got := bodies(t, c, room)
			if len(got) < 2 || !slices.Equal(got[len(got)-2:], want) {
				t.Errorf("%s sees %v; want to end with %v", c.UserID, got, want)
			}
		}

		// Typing on A shows on B.
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/typing/"+url.PathEscape(alice.UserID),
			map[string]any{"typing": true, "timeout": 20000}, nil)
		waitFor(t, "bob to see alice typing", func() bool { return slices.Contains(typingIn(t, bob, room), alice.UserID) })

		// Bob's read receipt on B shows on A.
		last := send(t, alice, room, "a2", "read this")
		waitFor(t, "bob to get the message to read", func() bool { return slices.Contains(bodies(t, bob, room), "read this") })
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(last), map[string]any{}, nil)
		waitFor(t, "alice to see bob's receipt", func() bool { return readBy(t, alice, room, last, bob.UserID) })

		// Bob leaves; A sees it.
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
		waitFor(t, "A to see bob leave", func() bool {
			members.Joined = nil
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &members)
			return members.Joined[bob.UserID] == nil
		})
	})
}

// syncRoom returns one room's part of a full sync.
func syncRoom(t *testing.T, c *testserver.Client, roomID string) map[string]any {
	t.Helper()
	var s struct {
		Rooms struct {
			Join map[string]map[string]any `json:"join"`
		} `json:"rooms"`
	}
	c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &s)
	return s.Rooms.Join[roomID]
}

func ephemeral(t *testing.T, c *testserver.Client, roomID, typ string) []map[string]any {
	room := syncRoom(t, c, roomID)
	eph, _ := room["ephemeral"].(map[string]any)
	evs, _ := eph["events"].([]any)
	var out []map[string]any
	for _, e := range evs {
		if m, ok := e.(map[string]any); ok && m["type"] == typ {
			out = append(out, m)
		}
	}
	return out
}

func typingIn(t *testing.T, c *testserver.Client, roomID string) []string {
	var out []string
	for _, e := range ephemeral(t, c, roomID, "m.typing") {
		ids, _ := e["content"].(map[string]any)["user_ids"].([]any)
		for _, id := range ids {
			out = append(out, id.(string))
		}
	}
	return out
}

func readBy(t *testing.T, c *testserver.Client, roomID, eventID, userID string) bool {
	for _, e := range ephemeral(t, c, roomID, "m.receipt") {
		byEvent, _ := e["content"].(map[string]any)[eventID].(map[string]any)
		read, _ := byEvent["m.read"].(map[string]any)
		if read[userID] != nil {
			return true
		}
	}
	return false
}
