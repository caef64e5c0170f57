package pusher

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/outbound/outboundtest"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// These tests drive delivery with a stand-in for push's notifications stream,
// the real room engine (every event is read through its visibility filter) and a
// real HTTP gateway on loopback that records what it receives.

const testServer = "push.test"

func uid(local string) string { return "@" + local + ":" + testServer }

// stream is a notifications stream a test appends to.
type stream struct {
	mu sync.Mutex
	ns []push.Notification
}

func (s *stream) NotificationsSince(_ context.Context, after int64, limit int) ([]push.Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []push.Notification
	for _, n := range s.ns {
		if n.Pos > after && len(out) < limit {
			out = append(out, n)
		}
	}
	return out, nil
}

// UnreadCounts counts, per room, the user's notifications the stream holds (no
// test here reads any).
func (s *stream) UnreadCounts(_ context.Context, userID string, roomIDs []string, _ bool) (map[string]push.Unread, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]push.Unread{}
	for _, r := range roomIDs {
		var u push.Unread
		for _, n := range s.ns {
			if n.UserID == userID && n.RoomID == r {
				u.Notifications++
			}
		}
		out[r] = u
	}
	return out, nil
}

func (s *stream) FillUnread(ctx context.Context, ns []push.Notification) error {
	for i := range ns {
		u, _ := s.UnreadCounts(ctx, ns[i].UserID, []string{ns[i].RoomID}, false)
		ns[i].Unread = u[ns[i].RoomID].Counts
	}
	return nil
}

func (s *stream) add(n push.Notification) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n.Pos = int64(len(s.ns) + 1)
	s.ns = append(s.ns, n)
}

// gateway is a push gateway stand-in: it records every body and answers with
// status and reply, which a test may change.
type gateway struct {
	srv *httptest.Server
	url string

	mu     sync.Mutex
	got    []map[string]any
	status int
	reply  func(body map[string]any) any
	// arrived is closed and replaced on every request.
	arrived chan struct{}
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{status: http.StatusOK, arrived: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m map[string]any
		json.Unmarshal(body, &m)
		g.mu.Lock()
		status, reply := g.status, g.reply
		if status == http.StatusOK && r.URL.Path == NotifyPath {
			g.got = append(g.got, m)
		}
		close(g.arrived)
		g.arrived = make(chan struct{})
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		var ans any = map[string]any{}
		if reply != nil {
			ans = reply(m)
		}
		json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(g.srv.Close)
	g.url = g.srv.URL + NotifyPath
	return g
}

func (g *gateway) setStatus(code int) {
	g.mu.Lock()
	g.status = code
	g.mu.Unlock()
}

// waitFor waits until the gateway has accepted n bodies and returns them.
func (g *gateway) waitFor(t *testing.T, n int) []map[string]any {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		g.mu.Lock()
		got, arrived := append([]map[string]any(nil), g.got...), g.arrived
		g.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-arrived:
		case <-deadline:
			t.Fatalf("gateway got %d pushes, want %d: %v", len(got), n, got)
		}
	}
}

// nextRequest is closed when the gateway is next asked anything.
func (g *gateway) nextRequest() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.arrived
}

type fixture struct {
	db     *storage.DB
	rooms  *rooms.Service
	stream *stream
	gw     *gateway
	svc    *Service
	cfg    Config
}

// loopback admits the gateway stand-in.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func newFixture(t *testing.T, db *storage.DB, cfg Config) *fixture {
	t.Helper()
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, rooms: rooms.New(db, rooms.Config{ServerName: testServer, Key: key}), stream: &stream{}, gw: newGateway(t)}
	if cfg.Guard == nil {
		cfg.Guard = outbound.New(outbound.Policy{Purpose: "push gateway", Allow: loopback})
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 40*time.Millisecond
	}
	f.cfg = cfg
	f.start(t)
	return f
}

func (f *fixture) start(t *testing.T) {
	t.Helper()
	svc, err := New(context.Background(), f.cfg, Deps{DB: f.db, Rooms: f.rooms, Source: f.stream})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	t.Cleanup(svc.Close)
}

// notify appends a notification and wakes the scanner, as push.NoticeSubject does.
func (f *fixture) notify(n push.Notification) {
	f.stream.add(n)
	f.svc.poke()
}

func (f *fixture) setPusher(t *testing.T, user, pushkey string, data map[string]any) {
	t.Helper()
	if data == nil {
		data = map[string]any{}
	}
	if _, ok := data["url"]; !ok {
		data["url"] = f.gw.url
	}
	raw, _ := json.Marshal(data)
	err := f.svc.Set(context.Background(), user, "DEV", Set{Kind: "http", AppID: "app", PushKey: pushkey, AppDisplayName: "App",
		DeviceDisplayName: "Phone", Lang: "en", Data: raw})
	if err != nil {
		t.Fatalf("Set(pusher %s of %s) = %v", pushkey, user, err)
	}
}

// room makes a room of creator with the others joined and returns its ID.
func (f *fixture) room(t *testing.T, creator string, name string, others ...string) string {
	t.Helper()
	ctx := context.Background()
	req := rooms.CreateRequest{Preset: "public_chat"}
	if name != "" {
		req.Name = &name
	}
	roomID, err := f.rooms.CreateRoom(ctx, creator, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range others {
		if _, err := f.rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: u, Target: u, Membership: "join"}); err != nil {
			t.Fatal(err)
		}
	}
	return roomID
}

func (f *fixture) send(t *testing.T, roomID, sender, body string) string {
	t.Helper()
	content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
	sent, err := f.rooms.Send(context.Background(), roomID, rooms.Proto{Sender: sender, Type: "m.room.message", Content: content})
	if err != nil {
		t.Fatal(err)
	}
	return sent.EventID
}

var notifyActions = []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"sound","value":"default"}`)}

func note(user, roomID, eventID string, unread int) push.Notification {
	return push.Notification{UserID: user, RoomID: roomID, EventID: eventID, Actions: notifyActions, Unread: push.Counts{Notifications: unread}}
}

func field(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func TestDeliveryFormats(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, Config{})
		alice, bob := uid("alice"), uid("bob")
		roomID := f.room(t, bob, "Garden", alice)
		f.setPusher(t, alice, "full", map[string]any{"extra": "kept"})
		f.setPusher(t, alice, "ids", map[string]any{"format": "event_id_only"})
		ev := f.send(t, roomID, bob, "hello alice")
		f.notify(note(alice, roomID, ev, 1))

		got := f.gw.waitFor(t, 2)
		byKey := map[string]map[string]any{}
		for _, b := range got {
			byKey[field(b, "notification", "devices").([]any)[0].(map[string]any)["pushkey"].(string)] = b
		}
		full, ids := byKey["full"], byKey["ids"]
		for _, c := range []struct {
			path []string
			want any
		}{
			{[]string{"notification", "id"}, ev},
			{[]string{"notification", "event_id"}, ev},
			{[]string{"notification", "room_id"}, roomID},
			{[]string{"notification", "type"}, "m.room.message"},
			{[]string{"notification", "sender"}, bob},
			{[]string{"notification", "room_name"}, "Garden"},
			{[]string{"notification", "prio"}, "high"},
			{[]string{"notification", "content", "body"}, "hello alice"},
			{[]string{"notification", "counts", "unread"}, float64(1)},
		} {
			if v := field(full, c.path...); v != c.want {
				t.Errorf("full push %v = %v; want %v (body %v)", c.path, v, c.want, full)
			}
		}
		dev := field(full, "notification", "devices").([]any)[0].(map[string]any)
		if dev["app_id"] != "app" || field(dev, "data", "extra") != "kept" || field(dev, "data", "url") != nil ||
			field(dev, "tweaks", "sound") != "default" || dev["pushkey_ts"] == nil {
			t.Errorf("full push device = %v; want app_id, data without url, tweaks.sound, pushkey_ts", dev)
		}
		if field(ids, "notification", "event_id") != ev || field(ids, "notification", "counts", "unread") != float64(1) {
			t.Errorf("event_id_only push = %v; want event_id and counts", ids)
		}
		for _, k := range []string{"content", "type", "sender", "room_name", "sender_display_name"} {
			if v := field(ids, "notification", k); v != nil {
				t.Errorf("event_id_only push carries %s = %v; want nothing of the event", k, v)
			}
		}
	})
}

// TestDeliveryRetriesInOrder: a gateway that is down gets everything once it is
// back, in order; a restart in between loses nothing; another pusher's gateway is
// not held up meanwhile.
func TestDeliveryRetriesInOrder(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, Config{})
		other := newGateway(t)
		alice, bob, carol := uid("alice"), uid("bob"), uid("carol")
		roomID := f.room(t, bob, "", alice, carol)
		f.setPusher(t, alice, "down", nil)
		f.setPusher(t, carol, "up", map[string]any{"url": other.url})
		f.gw.setStatus(http.StatusServiceUnavailable)

		var evs []string
		for i := range 3 {
			ev := f.send(t, roomID, bob, "message")
			evs = append(evs, ev)
			attempted := f.gw.nextRequest()
			f.notify(note(alice, roomID, ev, i+1))
			f.notify(note(carol, roomID, ev, i+1))
			<-attempted // at least one failed attempt on the way
		}
		if got := other.waitFor(t, 3); len(got) != 3 {
			t.Fatalf("healthy gateway got %d pushes; want 3", len(got))
		}
		f.svc.Close()
		f.start(t) // a restart while the gateway is down: the queue survives
		f.gw.setStatus(http.StatusOK)
		got := f.gw.waitFor(t, 3)
		for i, b := range got {
			if e := field(b, "notification", "event_id"); e != evs[i] {
				t.Errorf("push %d after the outage is of %v; want %s (in order)", i, e, evs[i])
			}
		}
	})
}

// TestRejectedPushkeyDeletesPusher: a gateway listing the pushkey in rejected
// deletes the pusher, and nothing more is sent to it.
func TestRejectedPushkeyDeletesPusher(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, Config{})
		alice, bob := uid("alice"), uid("bob")
		roomID := f.room(t, bob, "", alice)
		f.setPusher(t, alice, "gone", nil)
		f.setPusher(t, alice, "kept", nil)
		f.gw.mu.Lock()
		f.gw.reply = func(b map[string]any) any {
			if field(b, "notification", "devices").([]any)[0].(map[string]any)["pushkey"] == "gone" {
				return map[string]any{"rejected": []string{"gone"}}
			}
			return map[string]any{}
		}
		f.gw.mu.Unlock()
		f.notify(note(alice, roomID, f.send(t, roomID, bob, "one"), 1))
		f.gw.waitFor(t, 2)
		deadline := time.Now().Add(10 * time.Second)
		for {
			ps, err := f.svc.List(context.Background(), alice)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) == 1 && ps[0].PushKey == "kept" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pushers after a rejection = %v; want only kept", ps)
			}
			time.Sleep(10 * time.Millisecond)
		}
		f.notify(note(alice, roomID, f.send(t, roomID, bob, "two"), 2))
		got := f.gw.waitFor(t, 3)
		if k := field(got[2], "notification", "devices").([]any)[0].(map[string]any)["pushkey"]; k != "kept" {
			t.Errorf("push after the rejection went to %v; want kept", k)
		}
	})
}

// TestGiveUpOnDeadGateway: past GiveUpAfter of failures, notifications are
// dropped after one failed attempt each, and the pusher works again when the
// gateway returns.
func TestGiveUpOnDeadGateway(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, Config{GiveUpAfter: 30 * time.Millisecond})
		alice, bob := uid("alice"), uid("bob")
		roomID := f.room(t, bob, "", alice)
		f.setPusher(t, alice, "k", nil)
		f.gw.setStatus(http.StatusBadGateway)
		for i := range 3 {
			f.notify(note(alice, roomID, f.send(t, roomID, bob, "lost"), i+1))
		}
		waitQueueEmpty(t, f)
		f.gw.setStatus(http.StatusOK)
		ev := f.send(t, roomID, bob, "found")
		f.notify(note(alice, roomID, ev, 1))
		got := f.gw.waitFor(t, 1)
		if e := field(got[0], "notification", "event_id"); e != ev || len(got) != 1 {
			t.Errorf("pushes after giving up = %v; want just %s", got, ev)
		}
	})
}

func waitQueueEmpty(t *testing.T, f *fixture) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		// The cursor first: rows it passed were queued before the count, and
		// leave the queue only once decided on.
		var cursor int64
		if err := f.db.QueryRow(context.Background(), `SELECT pos FROM pusher_cursor WHERE name = 'pusher'`).Scan(&cursor); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := f.db.QueryRow(context.Background(), `SELECT COUNT(*) FROM pusher_queue`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		f.stream.mu.Lock()
		end := int64(len(f.stream.ns))
		f.stream.mu.Unlock()
		if n == 0 && cursor == end {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pusher queue still holds %d rows (cursor %d of %d)", n, cursor, end)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNoPushForInvisibleEvents: a notification naming an event its user cannot
// see (a room they never joined) is never pushed, whatever the stream says.
func TestNoPushForInvisibleEvents(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, Config{})
		alice, bob, mallory := uid("alice"), uid("bob"), uid("mallory")
		secret := f.room(t, alice, "Secret", bob)
		mine := f.room(t, mallory, "Mine", bob)
		f.setPusher(t, mallory, "k", nil)
		hidden := f.send(t, secret, bob, "not for mallory")
		seen := f.send(t, mine, bob, "for mallory")
		f.notify(note(mallory, secret, hidden, 1))
		f.notify(note(mallory, mine, seen, 1))
		// The queue is in order: once it is empty and the visible one arrived, the
		// hidden one was decided on.
		waitQueueEmpty(t, f)
		got := f.gw.waitFor(t, 1)
		if len(got) != 1 || field(got[0], "notification", "event_id") != seen {
			t.Errorf("mallory's pushes = %v; want only %s", got, seen)
		}
	})
}

// TestGuardRefusesPrivateGateway: with the default policy, a gateway on loopback
// is never dialled, even if its URL got past /pushers/set (a host name that
// resolves inward): the guard refuses the connection before it is made.
func TestGuardRefusesPrivateGateway(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		guard := outbound.New(outbound.Policy{Purpose: "push gateway"})
		f := newFixture(t, db, Config{Guard: guard})
		watched := outboundtest.Watch(t, "tcp4", "127.0.0.1")
		alice, bob := uid("alice"), uid("bob")
		roomID := f.room(t, bob, "", alice)
		// Stored directly: Set refuses the address itself.
		if _, err := db.Exec(context.Background(), `INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, pushkey_ts,
			app_display_name, device_display_name, lang, data) VALUES ($1, 'DEV', 'http', 'app', 'k', 0, 'App', 'Phone', 'en', $2)`,
			alice, `{"url":"http://`+watched.Addr+NotifyPath+`"}`); err != nil {
			t.Fatal(err)
		}
		f.notify(note(alice, roomID, f.send(t, roomID, bob, "hi"), 1))
		waitQueueEmpty(t, f)
		if guard.Dials() != 0 || guard.Refusals() == 0 {
			t.Errorf("guard dials = %d, refusals = %d; want 0 dials and a refusal", guard.Dials(), guard.Refusals())
		}
		if n := watched.Accepted(t); n != 0 {
			t.Errorf("the loopback gateway accepted %d connections; want 0", n)
		}
	})
}

// BenchmarkDeliver measures one notification's way from the stream to a
// gateway on loopback: queued by the scanner, read through the visibility
// filter, sent, deleted (SQLite, one pusher).
func BenchmarkDeliver(b *testing.B) {
	db, err := storage.Open(context.Background(), storagetest.DSN(b, storage.SQLite), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	key, _ := serverkey.Generate()
	f := &fixture{db: db, rooms: rooms.New(db, rooms.Config{ServerName: testServer, Key: key}), stream: &stream{}}
	f.gw = &gateway{status: http.StatusOK, arrived: make(chan struct{})}
	f.gw.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		f.gw.mu.Lock()
		f.gw.got = append(f.gw.got, nil)
		close(f.gw.arrived)
		f.gw.arrived = make(chan struct{})
		f.gw.mu.Unlock()
		w.Write([]byte(`{}`))
	}))
	defer f.gw.srv.Close()
	f.gw.url = f.gw.srv.URL + NotifyPath
	svc, err := New(context.Background(), Config{Guard: outbound.New(outbound.Policy{Allow: loopback})}, Deps{DB: db, Rooms: f.rooms, Source: f.stream})
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	f.svc = svc
	alice, bob := uid("alice"), uid("bob")
	roomID, err := f.rooms.CreateRoom(context.Background(), bob, rooms.CreateRequest{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.rooms.SetMembership(context.Background(), roomID, rooms.Membership{Sender: alice, Target: alice, Membership: "join"}); err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(map[string]any{"url": f.gw.url})
	if err := svc.Set(context.Background(), alice, "DEV", Set{Kind: "http", AppID: "app", PushKey: "k", AppDisplayName: "A", DeviceDisplayName: "D", Lang: "en", Data: raw}); err != nil {
		b.Fatal(err)
	}
	content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": "hi"})
	sent, err := f.rooms.Send(context.Background(), roomID, rooms.Proto{Sender: bob, Type: "m.room.message", Content: content})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		f.notify(note(alice, roomID, sent.EventID, 1))
	}
	for {
		f.gw.mu.Lock()
		n, arrived := len(f.gw.got), f.gw.arrived
		f.gw.mu.Unlock()
		if n >= b.N {
			break
		}
		<-arrived
	}
}
