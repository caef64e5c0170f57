package clientsync

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/bus"
	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/typing"
	"github.com/hongyan/hongyan/homeserver/users"
)

// newTestSync wires the sync service the way homeserver.New does, on an embedded
// bus, without any front-end.
func newTestSync(t *testing.T, db *storage.DB) (*Service, *rooms.Service) {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	u := users.New(db, users.Config{ServerName: "sync.test", Bus: b.Conn})
	r := rooms.New(db, rooms.Config{ServerName: "sync.test", Key: key, Bus: b.Conn, Profiles: u})
	ty, err := typing.New(b.Conn)
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNotifier(b.Conn, rooms.NoticeSubject, users.AccountDataSubject, receipts.Subject, typing.Subject, presence.Subject, e2ee.Subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	s := New(Deps{DB: db, Rooms: r, Users: u, Receipts: receipts.New(db, b.Conn), Typing: ty,
		Presence: presence.New(db, b.Conn, presence.Config{}), E2EE: e2ee.New(db, b.Conn), Notifier: n})
	return s, r
}

// timelineBodies is the bodies of the room's timeline in resp, nil if the room is
// not in it.
func timelineBodies(t *testing.T, resp *Response, roomID string) []string {
	t.Helper()
	jr, ok := resp.Rooms.Join[roomID]
	if !ok {
		return nil
	}
	bodies := []string{}
	for _, ev := range jr.Timeline.Events {
		if ev.Type != "m.room.message" {
			continue
		}
		var c struct{ Body string }
		if err := json.Unmarshal(ev.Content, &c); err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, c.Body)
	}
	return bodies
}

// TestSyncSince: next_batch is the position of everything sent so far; a sync from
// it returns exactly what came after, and nothing when nothing did; a token from
// the future is clamped to now; a long-poll from the latest token returns as soon as
// an event is committed.
func TestSyncSince(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s, r := newTestSync(t, db)
		alice := "@alice:sync.test"
		roomID, err := r.CreateRoom(ctx, alice, rooms.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		say := func(body string) {
			t.Helper()
			if _, err := r.Send(ctx, roomID, rooms.Proto{Sender: alice, Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`)}); err != nil {
				t.Fatal(err)
			}
		}
		doSync := func(since string, timeout time.Duration) *Response {
			t.Helper()
			req := Request{UserID: alice, Localpart: "alice", DeviceID: "DEV", SetPresence: presence.Offline, Timeout: timeout}
			if since != "" {
				tok, err := ParseToken(since)
				if err != nil {
					t.Fatalf("ParseToken(%q) of a next_batch: %v", since, err)
				}
				req.Since = &tok
			}
			resp, err := s.Sync(ctx, req)
			if err != nil {
				t.Fatalf("Sync(since %q): %v", since, err)
			}
			return resp
		}
		eventsPos := func(tok string) int64 {
			t.Helper()
			p, err := ParseToken(tok)
			if err != nil {
				t.Fatal(err)
			}
			return p.Events
		}

		say("one")
		first := doSync("", 0)
		if got := timelineBodies(t, first, roomID); len(got) != 1 || got[0] != "one" {
			t.Fatalf("initial sync timeline = %q; want [one]", got)
		}
		latest, err := r.LatestPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := eventsPos(first.NextBatch); got != latest {
			t.Errorf("initial next_batch %q has events %d; want the latest position %d", first.NextBatch, got, latest)
		}

		say("two")
		second := doSync(first.NextBatch, 0)
		if got := timelineBodies(t, second, roomID); len(got) != 1 || got[0] != "two" {
			t.Errorf("sync since %q timeline = %q; want [two] only", first.NextBatch, got)
		}
		if eventsPos(second.NextBatch) <= eventsPos(first.NextBatch) {
			t.Errorf("next_batch went from %q to %q; want the events position to grow", first.NextBatch, second.NextBatch)
		}

		idle := doSync(second.NextBatch, 0)
		if _, ok := idle.Rooms.Join[roomID]; ok {
			t.Errorf("sync since the latest token returned the room: %+v", idle.Rooms.Join[roomID])
		}
		if idle.NextBatch != second.NextBatch {
			t.Errorf("sync with nothing new: next_batch %q; want %q unchanged", idle.NextBatch, second.NextBatch)
		}

		future := Token{Events: eventsPos(second.NextBatch) + 1000, AccountData: 1000, Receipts: 1000, Presence: 1000, ToDevice: 1000, DeviceLists: 1000}
		clamped := doSync(future.String(), 0)
		if clamped.NextBatch != second.NextBatch {
			t.Errorf("sync since a future token %s: next_batch %q; want now, %q", future, clamped.NextBatch, second.NextBatch)
		}

		// A long-poll from the latest token wakes for the next event. The timeout
		// is only a bound on failure; the answer is the event.
		done := make(chan *Response, 1)
		go func() {
			req := Request{UserID: alice, Localpart: "alice", DeviceID: "DEV", SetPresence: presence.Offline, Timeout: 30 * time.Second}
			tok, _ := ParseToken(clamped.NextBatch)
			req.Since = &tok
			resp, err := s.Sync(ctx, req)
			if err != nil {
				t.Errorf("long-poll: %v", err)
			}
			done <- resp
		}()
		select {
		case resp := <-done:
			t.Fatalf("long-poll returned before any new event: %+v", resp)
		default:
		}
		say("three")
		select {
		case resp := <-done:
			if got := timelineBodies(t, resp, roomID); len(got) != 1 || got[0] != "three" {
				t.Errorf("long-poll timeline = %q; want [three]", got)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("long-poll did not return after a new event")
		}
	})
}
