package native

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/pusher"
	"github.com/hongyan/hongyan/homeserver/ratelimit"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/social"
	"github.com/hongyan/hongyan/homeserver/typing"
	"github.com/hongyan/hongyan/homeserver/users"
	"github.com/hongyan/hongyan/media"
)

// Config sets a native server's limits. Zero values take the defaults.
type Config struct {
	ServerName string
	// MaxFrame bounds an incoming frame's body. Default 8 MiB.
	MaxFrame int
	// IdleTimeout closes a session that sent nothing for this long. Default 90 s; the
	// hello reply asks clients to ping every third of it.
	IdleTimeout time.Duration
	// RetransmitAfter resends a push not acknowledged for this long. Default 10 s.
	RetransmitAfter time.Duration
	// MaxUnacked bounds a session's unacknowledged pushes; past it the client is
	// disconnected as a slow consumer (it resumes later). Default 2000.
	MaxUnacked int
	// QueueFrames bounds a session's outgoing queue, the same way. Default 1024.
	QueueFrames int
	// TokenRecheck is how often heartbeats re-check a session's access token, so a
	// logged-out device's session ends within it. Default 5 min: 10 000 idle
	// sessions then cost ~30 token lookups a second, not one per heartbeat.
	TokenRecheck time.Duration
	// RatePerSecond and RateBurst limit requests: per address before auth (the auth
	// op above all, against password guessing), per user after it; 0 turns the
	// limits off. Ops whose HTTP twins are not rate-limited (reads, acks,
	// heartbeats) draw on a bucket of their own ReadAllowance times as large, so a
	// busy reader does not starve its own sends and a flood of reads is still bounded.
	RatePerSecond float64
	RateBurst     int
}

// ReadAllowance is how many times the write rate the ops in readOps may run.
const ReadAllowance = 10

func (c *Config) defaults() {
	if c.MaxFrame <= 0 || c.MaxFrame > MaxFrame {
		c.MaxFrame = 8 << 20
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 90 * time.Second
	}
	if c.RetransmitAfter <= 0 {
		c.RetransmitAfter = 10 * time.Second
	}
	if c.MaxUnacked <= 0 {
		c.MaxUnacked = 2000
	}
	if c.TokenRecheck <= 0 {
		c.TokenRecheck = 5 * time.Minute
	}
	if c.QueueFrames <= 0 {
		c.QueueFrames = 1024
	}
}

// Deps are the core services the ops call.
type Deps struct {
	// Limiter is the rate limiter the front-ends share (the HTTP API's), so that an
	// address or a user has one budget on every front-end; it is used when
	// Config.RatePerSecond turns limits on, and nil then builds one of the native
	// server's own.
	Limiter  *ratelimit.Limiter
	Rooms    *rooms.Service
	Users    *users.Service
	Typing   *typing.Service
	Receipts *receipts.Service
	Presence *presence.Service
	Media    *media.Service
	// Social serves the friends and groups ops; nil answers them M_UNRECOGNIZED.
	Social  *social.Service
	Bus     *nats.Conn
	Pushers *pusher.Service
}

// Server serves native sessions on any number of listeners.
type Server struct {
	cfg     Config
	d       Deps
	limiter *ratelimit.Limiter // per address before auth, per user after; nil: off
	reads   *ratelimit.Limiter // per user, for readOps; nil: off
	hub     *hub
	subs    []*nats.Subscription

	mu       sync.Mutex
	sessions map[*session]struct{} // guarded by mu
	authed   sessionSet            // user → authenticated sessions; guarded by mu
	closed   bool                  // guarded by mu
	wg       sync.WaitGroup        // sessions and revocation checks
}

// New returns a server; it listens to the bus for the events it pushes.
func New(cfg Config, d Deps) (*Server, error) {
	cfg.defaults()
	s := &Server{cfg: cfg, d: d, sessions: map[*session]struct{}{}, authed: sessionSet{}}
	if cfg.RatePerSecond > 0 {
		if s.limiter = d.Limiter; s.limiter == nil {
			s.limiter = ratelimit.New(cfg.RatePerSecond, cfg.RateBurst)
		}
		s.reads = ratelimit.New(cfg.RatePerSecond*ReadAllowance, cfg.RateBurst*ReadAllowance)
	}
	s.hub = newHub(s)
	for subject, fn := range map[string]func([]byte){
		rooms.NoticeSubject:    s.hub.onRoomNotice,
		typing.Subject:         s.hub.onTyping,
		receipts.Subject:       s.hub.onReceipt,
		users.RevokedSubject:   s.onRevoked,
		social.Subject:         s.hub.onSocial,
		pusher.NotifiedSubject: s.hub.onNotified,
	} {
		sub, err := d.Bus.Subscribe(subject, func(m *nats.Msg) { fn(m.Data) })
		if err != nil {
			s.Close()
			return nil, err
		}
		s.subs = append(s.subs, sub)
	}
	return s, nil
}

// Serve accepts connections from ln (TCP, or TLS from tls.NewListener) until ctx
// ends or ln is closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetKeepAlive(true)
		}
		s.serveConn(conn)
	}
}

// WebSocket returns the handler of the WebSocket transport: one frame per binary
// message.
func (s *Server) WebSocket() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		c.SetReadLimit(int64(s.cfg.MaxFrame) + HeaderSize)
		// The connection outlives the request's context; the session closes it.
		s.serveConn(websocket.NetConn(context.Background(), c, websocket.MessageBinary))
	})
}

func (s *Server) serveConn(conn net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	sess := newSession(s, conn)
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		sess.run()
		s.mu.Lock()
		delete(s.sessions, sess)
		if sess.userID != "" {
			s.authed.drop(sess.userID, sess)
		}
		s.mu.Unlock()
	}()
}

// addAuthed indexes a session that just authenticated, for revocations. Its
// userID, deviceID and token are set and never change after.
func (s *Server) addAuthed(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authed.add(sess.userID, sess)
}

// onRevoked handles a users.Revoked notice: the sessions of the devices it names
// check their tokens at once, and those whose tokens are gone close with
// logged_out. Checking rather than closing outright keeps a session that logged in
// again on the same device ID after the revocation (its new token is valid).
func (s *Server) onRevoked(data []byte) {
	var n users.Revoked
	if json.Unmarshal(data, &n) != nil {
		return
	}
	s.mu.Lock()
	var hit []*session
	for sess := range s.authed[n.UserID] {
		if n.Covers(sess.deviceID) {
			hit = append(hit, sess)
		}
	}
	if len(hit) == 0 || s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	// Off the bus's delivery goroutine: the checks read the database.
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, sess := range hit {
			sess.checkToken(ctx)
		}
	}()
}

// Sessions is the number of open sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close closes every session with server_shutdown and waits for them.
func (s *Server) Close() {
	for _, sub := range s.subs {
		sub.Unsubscribe()
	}
	s.mu.Lock()
	s.closed = true
	open := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		open = append(open, sess)
	}
	s.mu.Unlock()
	for _, sess := range open {
		sess.closeWith(CloseShutdown, "the server is shutting down")
	}
	s.wg.Wait()
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// hub routes the bus's notices to the sessions they concern, and keeps per room a
// feed of recent events so that a message to a room with a thousand connected
// members is read from the database once, not a thousand times.
type hub struct {
	srv *Server

	mu     sync.RWMutex
	byRoom sessionSet // joined rooms → sessions pushing them
	byUser sessionSet // user → started sessions
	feeds  map[string]*feed
}

func newHub(s *Server) *hub {
	return &hub{srv: s, byRoom: sessionSet{}, byUser: sessionSet{}, feeds: map[string]*feed{}}
}

// sessionSet maps a key (room or user ID) to the sessions under it.
type sessionSet map[string]map[*session]struct{}

func (m sessionSet) add(key string, sess *session) {
	if m[key] == nil {
		m[key] = map[*session]struct{}{}
	}
	m[key][sess] = struct{}{}
}

// drop removes sess from key and reports whether key has no sessions left.
func (m sessionSet) drop(key string, sess *session) bool {
	set := m[key]
	delete(set, sess)
	if len(set) > 0 {
		return false
	}
	delete(m, key)
	return true
}

func (m sessionSet) of(key string) []*session {
	out := make([]*session, 0, len(m[key]))
	for s := range m[key] {
		out = append(out, s)
	}
	return out
}

func (h *hub) addUser(sess *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byUser.add(sess.userID, sess)
}

// subscribe makes sess receive roomID's events.
func (h *hub) subscribe(sess *session, roomID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byRoom.add(roomID, sess)
}

// unsubscribe stops them; a room nobody pushes any more loses its feed.
func (h *hub) unsubscribe(sess *session, roomIDs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range roomIDs {
		if h.byRoom.drop(r, sess) {
			delete(h.feeds, r)
		}
	}
}

// remove forgets a closed session.
func (h *hub) remove(sess *session, roomIDs []string) {
	h.unsubscribe(sess, roomIDs...)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byUser.drop(sess.userID, sess)
}

// roomSessions returns the sessions pushing roomID.
func (h *hub) roomSessions(roomID string) []*session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.byRoom.of(roomID)
}

func (h *hub) onRoomNotice(data []byte) {
	var n rooms.Notice
	if json.Unmarshal(data, &n) != nil {
		return
	}
	h.mu.Lock()
	subs := h.byRoom.of(n.RoomID)
	var members []*session
	if n.Type == "m.room.member" && n.StateKey != nil {
		members = h.byUser.of(*n.StateKey)
	}
	if f := h.feeds[n.RoomID]; f != nil {
		f.note(n.Seq)
	} else if len(subs) > 0 {
		f = &feed{roomID: n.RoomID}
		f.note(n.Seq)
		h.feeds[n.RoomID] = f
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.markDirty(n.RoomID)
	}
	for _, s := range members {
		s.noteMembership(n.RoomID, n.Seq)
	}
}

// feedOf returns roomID's feed, creating it.
func (h *hub) feedOf(roomID string) *feed {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[roomID]
	if f == nil {
		f = &feed{roomID: roomID}
		h.feeds[roomID] = f
	}
	return f
}

func (h *hub) onTyping(data []byte) {
	var n typing.Notice
	if json.Unmarshal(data, &n) != nil {
		return
	}
	subs := h.roomSessions(n.RoomID)
	if len(subs) == 0 {
		return
	}
	// The typing service applies the same notice on its own subscription, maybe
	// after this one: the changed user is taken from the notice itself.
	users := []string{}
	for _, u := range h.srv.d.Typing.Changed([]string{n.RoomID}, -1)[n.RoomID] {
		if u != n.UserID {
			users = append(users, u)
		}
	}
	if n.Typing {
		users = append(users, n.UserID)
	}
	push := Message[TypingPush]{Op: "typing", Data: TypingPush{RoomID: n.RoomID, UserIDs: users}}
	for _, s := range subs {
		s.sendPush(push)
	}
}

func (h *hub) onReceipt(data []byte) {
	var n receipts.Notice
	if json.Unmarshal(data, &n) != nil {
		return
	}
	subs := h.roomSessions(n.RoomID)
	if len(subs) == 0 {
		return
	}
	// Private receipts are their owner's alone; the public ones go to everyone.
	got, err := h.srv.d.Receipts.Since(context.Background(), []string{n.RoomID}, "", n.StreamPos-1, n.StreamPos)
	if err != nil {
		slog.Warn("native: read receipt", "room_id", n.RoomID, "err", err)
		return
	}
	for _, r := range got[n.RoomID] {
		push := Message[ReceiptPush]{Op: "receipt", Data: ReceiptPush{RoomID: r.RoomID, UserID: r.UserID, Type: r.Type, EventID: r.EventID, ThreadID: r.ThreadID, TS: r.TS}}
		for _, s := range subs {
			s.sendPush(push)
		}
	}
}

// feedSize is how many recent events a room's feed keeps.
const feedSize = 256

// feed is a room's recent events, loaded from the database once for all the
// sessions pushing the room, with each event's encoded push per codec.
type feed struct {
	roomID string

	mu     sync.Mutex
	known  int64        // the highest seq announced on the bus; guarded by mu
	events []*feedEvent // contiguous seqs, oldest first; guarded by mu
}

type feedEvent struct {
	seq        int64
	membership string // for m.room.member events
	stateKey   string
	typ        string
	push       Message[EventPush]

	mu     sync.Mutex
	frames [3][]byte // encoded frame per codec, made on first use
}

func (f *feed) note(seq int64) {
	f.mu.Lock()
	f.known = max(f.known, seq)
	f.mu.Unlock()
}

// after returns the events with seq > after, up to limit: from memory when the feed
// holds them, else from the database.
func (f *feed) after(ctx context.Context, rs *rooms.Service, after int64, limit int) ([]*feedEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	last := int64(0)
	if n := len(f.events); n > 0 {
		last = f.events[n-1].seq
	}
	if len(f.events) == 0 || f.known > last {
		from := last
		if len(f.events) == 0 || after < f.events[0].seq-1 {
			from = after
		}
		fresh, err := loadFeedEvents(ctx, rs, f.roomID, from, 500)
		if err != nil {
			return nil, err
		}
		if len(fresh) > 0 && (len(f.events) == 0 || fresh[0].seq == last+1) {
			f.events = append(f.events, fresh...)
			if len(f.events) > feedSize {
				f.events = append([]*feedEvent(nil), f.events[len(f.events)-feedSize:]...)
			}
		} else if len(fresh) > 0 && fresh[0].seq == after+1 {
			// Older than the feed holds (a resume from far back): served, not kept.
			return fresh[:min(len(fresh), limit)], nil
		}
		if n := len(f.events); n > 0 {
			f.known = max(f.known, f.events[n-1].seq)
		}
	}
	if len(f.events) == 0 || after < f.events[0].seq-1 {
		return loadFeedEvents(ctx, rs, f.roomID, after, limit)
	}
	i := int(after - f.events[0].seq + 1)
	if i >= len(f.events) {
		return nil, nil
	}
	out := f.events[i:]
	return out[:min(len(out), limit)], nil
}

func loadFeedEvents(ctx context.Context, rs *rooms.Service, roomID string, after int64, limit int) ([]*feedEvent, error) {
	evs, err := rs.FeedAfter(ctx, roomID, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*feedEvent, len(evs))
	for i, e := range evs {
		out[i] = newFeedEvent(e)
	}
	return out, nil
}

func newFeedEvent(e rooms.ClientEvent) *feedEvent {
	fe := &feedEvent{seq: e.Seq, typ: e.Type, push: Message[EventPush]{Op: "event", Data: EventPush{RoomID: e.RoomID, Seq: e.Seq, Event: toEvent(e)}}}
	if e.StateKey != nil {
		fe.stateKey = *e.StateKey
	}
	if e.Type == "m.room.member" {
		fe.membership, _ = fe.push.Data.Event.Content["membership"].(string)
	}
	return fe
}

// hiddenFeedEvent is fe, a message from a user the session's user ignores, as
// that user is pushed it: its seq, type and sender only, its content empty and
// unsigned["im.hongyan.ignored"] true, so that seq stays gapless.
func hiddenFeedEvent(fe *feedEvent) *feedEvent {
	ev := fe.push.Data.Event
	ev.Content, ev.Unsigned, ev.Redacts = map[string]any{}, map[string]any{"im.hongyan.ignored": true}, ""
	return &feedEvent{seq: fe.seq, typ: fe.typ, push: Message[EventPush]{Op: "event", Data: EventPush{RoomID: fe.push.Data.RoomID, Seq: fe.seq, Event: ev}}}
}

func (fe *feedEvent) frame(c Codec) ([]byte, error) {
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if fe.frames[c] == nil {
		body, err := Marshal(c, fe.push)
		if err != nil {
			return nil, err
		}
		if fe.frames[c], err = AppendFrame(nil, c, body); err != nil {
			return nil, err
		}
	}
	return fe.frames[c], nil
}

// toEvent converts a client event; its content becomes a map so every codec
// encodes it natively.
func toEvent(e rooms.ClientEvent) Event {
	ev := Event{Seq: e.Seq, EventID: e.EventID, RoomID: e.RoomID, Type: e.Type, Sender: e.Sender, StateKey: e.StateKey,
		OriginServerTS: e.OriginServerTS, Redacts: e.Redacts, Content: map[string]any{}}
	json.Unmarshal(e.Content, &ev.Content)
	if rb, ok := e.Unsigned["redacted_because"]; ok {
		ev.Unsigned = map[string]any{"redacted_because": rb}
	}
	return ev
}
