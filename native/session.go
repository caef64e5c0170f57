package native

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// session is one connection: a reader that runs ops in order, a writer that owns
// the connection's writes, and (after resume) a pusher that delivers room events.
type session struct {
	srv  *Server
	conn net.Conn
	id   string
	ctx  context.Context
	stop context.CancelFunc

	// Set by hello and auth, in the reader, before the pusher starts.
	codec     Codec
	hello     bool
	userID    string
	localpart string
	deviceID  string
	token     string
	// tokenChecked is when the token was last verified (auth, then heartbeats).
	tokenChecked time.Time

	// queue holds encoded frames for the writer. A slice under a mutex rather than
	// a buffered channel: an idle session then holds no queue memory at all.
	qmu       sync.Mutex
	queue     [][]byte // guarded by qmu
	notify    chan struct{}
	closeOnce sync.Once
	closing   chan struct{}
	closeMsg  []byte // the close frame, written last

	mu       sync.Mutex
	started  bool
	joined   map[string]int64       // room → last seq pushed; guarded by mu
	dirty    map[string]bool        // rooms with events to push; guarded by mu
	members  map[string]int64       // rooms not joined → seq of a membership event of ours; guarded by mu
	unacked  map[string][]unackedAt // room → pushes in seq order; guarded by mu
	nUnacked int                    // guarded by mu
	wake     chan struct{}
	retx     *time.Timer // armed while pushes are unacknowledged

	// catchUp holds, for a room resumed from before the user's current join, the
	// seq just before that join: events up to it are history, read through the
	// visibility filter (EventsAfterSeq), never from the unfiltered feed.
	catchUp map[string]int64 // guarded by mu
}

type unackedAt struct {
	seq   int64
	frame []byte
	sent  time.Time
}

func newSession(s *Server, conn net.Conn) *session {
	ctx, cancel := context.WithCancel(context.Background())
	return &session{
		srv: s, conn: conn, id: newID(), ctx: ctx, stop: cancel,
		notify: make(chan struct{}, 1), closing: make(chan struct{}),
		joined: map[string]int64{}, dirty: map[string]bool{}, members: map[string]int64{}, catchUp: map[string]int64{},
		unacked: map[string][]unackedAt{}, wake: make(chan struct{}, 1),
	}
}

func (s *session) run() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writer()
	}()
	s.reader()
	s.closeWith(CloseNormal, "")
	<-writerDone
	s.stop()
	s.conn.Close()
	s.mu.Lock()
	rooms := make([]string, 0, len(s.joined))
	for r := range s.joined {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	if s.userID != "" {
		s.srv.hub.remove(s, rooms)
	}
}

// closeWith ends the session: the writer sends a close push with code and reason
// after what is already queued (at most a short wait), then closes the connection.
func (s *session) closeWith(code, reason string) {
	s.closeOnce.Do(func() {
		if s.hello {
			body, _ := Marshal(s.codec, Message[ClosePush]{Op: "close", Data: ClosePush{Code: code, Reason: reason}})
			s.closeMsg, _ = AppendFrame(nil, s.codec, body)
		} else {
			body, _ := Marshal(JSON, Message[ClosePush]{Op: "close", Data: ClosePush{Code: code, Reason: reason}})
			s.closeMsg, _ = AppendFrame(nil, JSON, body)
		}
		if code != CloseNormal {
			// No user here: closeWith runs on other goroutines (revocations, shutdown)
			// while the reader may be setting userID in auth; the session ID ties this
			// line to the "native session authenticated" one.
			slog.Debug("native session closed", "session", s.id, "code", code, "reason", reason)
		}
		close(s.closing)
		// Unblocks the reader; the writer still gets its last frame out.
		s.conn.SetReadDeadline(time.Now())
	})
}

// writer owns the connection's writes: it writes queued frames, delivers room
// events when woken, and retransmits unacknowledged pushes, until the session
// closes; then it writes the close frame. One goroutine for all three keeps an idle
// session down to two goroutines (this and the reader).
func (s *session) writer() {
	s.retx = time.NewTimer(time.Hour)
	s.retx.Stop()
	defer s.retx.Stop()
	for {
		select {
		case <-s.notify:
			if err := s.flush(10 * time.Second); err != nil {
				s.closeWith(CloseNormal, "")
				s.conn.Close()
				return
			}
		case <-s.wake:
			if err := s.pushPending(); err != nil && s.ctx.Err() == nil {
				slog.Warn("native push", "session", s.id, "err", err)
				time.AfterFunc(100*time.Millisecond, s.poke)
			}
		case <-s.retx.C:
			s.retransmit()
		case <-s.closing:
			// What is queued goes out first, within a short bound (a slow consumer's
			// socket may not take it), then the close frame.
			s.flush(2 * time.Second)
			s.conn.SetWriteDeadline(time.Now().Add(time.Second))
			s.conn.Write(s.closeMsg)
			if tc, ok := s.conn.(interface{ CloseWrite() error }); ok {
				tc.CloseWrite()
			}
			s.conn.Close()
			return
		}
	}
}

// flush writes every queued frame in one vectored write.
func (s *session) flush(timeout time.Duration) error {
	s.qmu.Lock()
	frames := s.queue
	s.queue = nil
	s.qmu.Unlock()
	if len(frames) == 0 {
		return nil
	}
	s.conn.SetWriteDeadline(time.Now().Add(timeout))
	bufs := net.Buffers(frames)
	_, err := bufs.WriteTo(s.conn)
	return err
}

// enqueue queues a frame for the writer; a full queue means the client does not
// keep up, and it is disconnected rather than slowing anyone else.
func (s *session) enqueue(frame []byte) bool {
	select {
	case <-s.closing:
		return false
	default:
	}
	s.qmu.Lock()
	full := len(s.queue) >= s.srv.cfg.QueueFrames
	if !full {
		s.queue = append(s.queue, frame)
	}
	s.qmu.Unlock()
	if full {
		s.closeWith(CloseSlowConsumer, fmt.Sprintf("more than %d frames queued", s.srv.cfg.QueueFrames))
		return false
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return true
}

func (s *session) send(v any) bool {
	body, err := Marshal(s.codec, v)
	if err != nil {
		slog.Error("native: encode", "err", err)
		return false
	}
	frame, err := AppendFrame(nil, s.codec, body)
	if err != nil {
		body, _ = Marshal(s.codec, Message[Error]{Op: "error", Data: Error{Code: string(mxerror.TooLarge), Message: "reply larger than a frame"}})
		frame, _ = AppendFrame(nil, s.codec, body)
	}
	return s.enqueue(frame)
}

// sendPush queues an ephemeral push (typing, receipt) once the session started.
func (s *session) sendPush(v any) {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		s.send(v)
	}
}

func (s *session) reader() {
	// A small buffer: frame headers and small requests come through it, large
	// bodies are read straight into their own buffer.
	r := bufio.NewReaderSize(s.conn, 512)
	for {
		s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.IdleTimeout))
		c, body, err := ReadFrame(r, s.srv.cfg.MaxFrame)
		if err != nil {
			select {
			case <-s.closing:
				return
			default:
			}
			switch {
			case errors.Is(err, ErrFrameTooLarge):
				s.closeWith(CloseTooLarge, err.Error())
			case errors.Is(err, ErrBadCodec):
				s.closeWith(CloseBadFrame, err.Error())
			case errors.Is(err, os.ErrDeadlineExceeded):
				s.closeWith(CloseIdle, fmt.Sprintf("nothing received for %s", s.srv.cfg.IdleTimeout))
			case errors.Is(err, io.ErrUnexpectedEOF):
				s.closeWith(CloseBadFrame, "truncated frame")
			}
			return
		}
		if !s.hello {
			s.codec = c
		} else if c != s.codec {
			s.closeWith(CloseProtocol, fmt.Sprintf("frame in %s on a %s session", c, s.codec))
			return
		}
		if !s.handle(body) {
			return
		}
	}
}

// handle runs one request; false ends the session.
func (s *session) handle(body []byte) bool {
	var env Envelope
	if err := Unmarshal(s.codec, body, &env); err != nil {
		if !s.hello {
			s.closeWith(CloseProtocol, "the first frame must be a hello")
			return false
		}
		s.send(Message[Error]{Op: "error", Data: Error{Code: string(mxerror.NotJSON), Message: "undecodable envelope: " + err.Error()}})
		return true
	}
	if !s.hello && env.Op != "hello" {
		// Refused, and answered: a request with an ID gets its error before the close.
		s.replyErr(env.ID, mxerror.New(mxerror.BadState, "the first frame must be a hello"))
		s.closeWith(CloseProtocol, "the first frame must be a hello")
		return false
	}
	// The hello that opens the session and a close are free; anything else counts.
	if s.hello && env.Op != "close" {
		if err := s.throttle(env.Op); err != nil {
			s.replyErr(env.ID, err)
			return true
		}
	}
	op, ok := ops[env.Op]
	if !ok {
		s.replyErr(env.ID, mxerror.New(mxerror.Unrecognized, "unknown op %q", env.Op))
		return true
	}
	if op.authed && s.userID == "" {
		s.replyErr(env.ID, mxerror.New(mxerror.MissingToken, "authenticate first"))
		return true
	}
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	res, err := op.fn(ctx, s, body)
	cancel()
	var refused *refusal
	if errors.As(err, &refused) {
		s.replyErr(env.ID, refused.err)
		s.closeWith(refused.code, refused.reason)
		return false
	}
	if errors.Is(err, errEnd) {
		return false
	}
	if err != nil {
		s.replyErr(env.ID, err)
		return true
	}
	if env.ID != "" || res != nil {
		s.send(Message[any]{ID: env.ID, Op: "reply", Data: res})
	}
	return true
}

// readOps are the ops whose HTTP twins are not rate-limited (/sync, /messages,
// /state, /joined_rooms, receipts, profile and presence reads, downloads) and the
// heartbeat: after auth they draw on the user's read allowance (Config), not on the
// bucket the HTTP API's rate-limited routes share. Every other op, and every op
// not named here, draws on that shared bucket.
var readOps = map[string]bool{
	"ping": true, "resume": true, "ack": true, "history": true, "rooms": true, "state": true,
	"receipt": true, "get_presence": true, "profile": true, "download": true,
	"friend_requests": true, "friends": true, "blocked": true, "groups": true, "group_members": true,
	"pushers.get": true,
}

// throttle takes one request's token: before auth from the remote address's bucket
// (the one the HTTP API's unauthenticated routes, /login among them, use), after
// auth from the user's, or from the user's read allowance for readOps. Past it the
// request is answered M_LIMIT_EXCEEDED with retry_after_ms and not run.
func (s *session) throttle(op string) error {
	lim, key := s.srv.limiter, remoteIP(s)
	if s.userID != "" {
		key = s.userID
		if readOps[op] {
			lim = s.srv.reads
		}
	}
	if ok, wait := lim.Allow(key); !ok {
		return &mxerror.Error{Code: mxerror.LimitExceeded, Message: "too many requests", RetryAfterMs: wait.Milliseconds() + 1}
	}
	return nil
}

// checkToken looks the session's access token up again and closes the session with
// logged_out if it is no longer valid. Safe from any goroutine once authenticated.
func (s *session) checkToken(ctx context.Context) (closed bool) {
	c, err := s.srv.d.Users.Authenticate(ctx, s.token, remoteIP(s))
	if mxerror.Is(err, mxerror.UnknownToken) {
		s.closeWith(CloseLoggedOut, "the access token is no longer valid")
		return true
	}
	if err == nil && c.Locked {
		s.closeWith(CloseLocked, "this account has been locked")
		return true
	}
	if err != nil && ctx.Err() == nil {
		slog.Warn("native: check access token", "session", s.id, "user", s.userID, "err", err)
	}
	return false
}

// errEnd is returned by an op that ends the session (close, a repeated hello).
var errEnd = errors.New("session ends")

// refusal is returned by an op that refuses the request and ends the session (a
// hello of another protocol version): the request is answered with err, carrying
// its ID, before the close frame with code and reason, so a client waiting on the
// reply learns why instead of seeing the connection drop.
type refusal struct {
	err          error
	code, reason string
}

func (r *refusal) Error() string { return r.reason }

func (s *session) replyErr(id string, err error) {
	var me *mxerror.Error
	if !errors.As(err, &me) {
		var de decodeError
		if errors.As(err, &de) {
			me = mxerror.New(mxerror.BadJSON, "%s", de.Error())
		} else {
			slog.Error("native op failed", "session", s.id, "user", s.userID, "err", err)
			me = mxerror.New(mxerror.Unknown, "internal error")
		}
	}
	s.send(Message[Error]{ID: id, Op: "error", Data: Error{Code: string(me.Code), Message: me.Message, RetryAfterMs: me.RetryAfterMs}})
}

// start begins pushes: rooms in from resume from their given seq, other joined
// rooms from their latest.
func (s *session) start(ctx context.Context, from map[string]int64) error {
	ms, err := s.srv.d.Rooms.UserMemberships(ctx, s.userID)
	if err != nil {
		return err
	}
	var joined []string
	for _, m := range ms {
		if m.Membership == "join" {
			joined = append(joined, m.RoomID)
		}
	}
	latest, err := s.srv.d.Rooms.LatestSeqs(ctx, joined)
	if err != nil {
		return err
	}
	joinSeqs, err := s.srv.d.Rooms.JoinSeqs(ctx, s.userID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return mxerror.New(mxerror.BadState, "already resumed")
	}
	s.started = true
	for _, r := range joined {
		seq := latest[r]
		if given, ok := from[r]; ok && given >= 0 && given < seq {
			seq = given
			// The client picks where to resume from: what came before the
			// user's join is history, which the room's visibility rules decide.
			floor := joinSeqs[r] - 1
			if joinSeqs[r] <= 0 {
				floor = latest[r] // join seq unknown: filter all of it
			}
			if seq < floor {
				s.catchUp[r] = floor
			}
		}
		s.joined[r] = seq
		s.dirty[r] = true
	}
	s.mu.Unlock()
	// Subscribing after reading the positions can only repeat a wake-up, never
	// lose an event: the pusher reads everything after the cursor.
	s.srv.hub.addUser(s)
	for _, r := range joined {
		s.srv.hub.subscribe(s, r)
	}
	s.poke()
	return nil
}

func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *session) markDirty(roomID string) {
	s.mu.Lock()
	s.dirty[roomID] = true
	s.mu.Unlock()
	s.poke()
}

// noteMembership records a membership event about this session's user in a room
// it does not push yet (an invite, or a join from another device).
func (s *session) noteMembership(roomID string, seq int64) {
	s.mu.Lock()
	if _, ok := s.joined[roomID]; !ok && seq > s.members[roomID] {
		s.members[roomID] = seq
	}
	s.mu.Unlock()
	s.poke()
}

const pushBatch = 200

func (s *session) pushPending() error {
	s.mu.Lock()
	members := s.members
	s.members = map[string]int64{}
	dirty := make([]string, 0, len(s.dirty))
	for r := range s.dirty {
		dirty = append(dirty, r)
	}
	clear(s.dirty)
	s.mu.Unlock()
	// Users this one ignores (m.ignored_user_list): their invites are not pushed
	// and their messages are pushed as hidden stubs, keeping seq gapless.
	ignored, err := s.srv.d.Rooms.IgnoredBy(s.ctx, s.userID)
	if err != nil {
		return err
	}

	// Membership events in rooms not pushed yet: the event itself, and on a join
	// the room's events from there on.
	for roomID, seq := range members {
		// The user's own membership event, which the visibility rules always show.
		evs, _, err := s.srv.d.Rooms.EventsAfterSeq(s.ctx, roomID, s.userID, seq-1, 1)
		if err != nil || len(evs) == 0 {
			return err
		}
		fe := newFeedEvent(evs[0])
		if fe.stateKey != s.userID || (fe.membership == "invite" && ignored[fe.push.Data.Event.Sender]) {
			continue
		}
		s.mu.Lock()
		_, already := s.joined[roomID]
		s.mu.Unlock()
		if already {
			continue
		}
		if !s.pushEvent(roomID, fe) {
			return nil
		}
		if fe.membership == "join" {
			s.mu.Lock()
			s.joined[roomID] = fe.seq
			s.mu.Unlock()
			s.srv.hub.subscribe(s, roomID)
			dirty = append(dirty, roomID)
		}
	}

	for _, roomID := range dirty {
		s.mu.Lock()
		after, ok := s.joined[roomID]
		upTo, catching := s.catchUp[roomID]
		s.mu.Unlock()
		if !ok {
			continue
		}
		if catching && after < upTo {
			if more, err := s.pushHistory(roomID, after, upTo); err != nil || !more {
				return err
			}
			continue
		}
		evs, err := s.srv.hub.feedOf(roomID).after(s.ctx, s.srv.d.Rooms, after, pushBatch)
		if err != nil {
			return err
		}
		left := false
		for _, fe := range evs {
			if ignored[fe.push.Data.Event.Sender] && fe.push.Data.Event.StateKey == nil {
				fe = hiddenFeedEvent(fe)
			}
			if !s.pushEvent(roomID, fe) {
				return nil
			}
			after = fe.seq
			// Our own leave, kick or ban is the last event the room pushes.
			if fe.typ == "m.room.member" && fe.stateKey == s.userID && fe.membership != "join" {
				left = true
				break
			}
		}
		s.mu.Lock()
		if left {
			delete(s.joined, roomID)
		} else {
			s.joined[roomID] = after
		}
		s.mu.Unlock()
		if left {
			s.srv.hub.unsubscribe(s, roomID)
		} else if len(evs) == pushBatch {
			s.markDirty(roomID) // more to come; other rooms get their turn first
		}
	}
	return nil
}

// pushHistory pushes the next batch of a room's events after seq after, up to
// upTo (the seq before the user's join), that the user may see, and moves the
// room's cursor past the batch even when it was all hidden. It reports false when
// the session is closing.
func (s *session) pushHistory(roomID string, after, upTo int64) (bool, error) {
	evs, reached, err := s.srv.d.Rooms.EventsAfterSeq(s.ctx, roomID, s.userID, after, int(min(pushBatch, upTo-after)))
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		if !s.pushEvent(roomID, newFeedEvent(e)) {
			return false, nil
		}
	}
	if reached <= after {
		reached = upTo // nothing more to read before the join
	}
	s.mu.Lock()
	if _, ok := s.joined[roomID]; ok {
		s.joined[roomID] = reached
	}
	if reached >= upTo {
		delete(s.catchUp, roomID) // from the join on, the feed
	}
	s.mu.Unlock()
	s.markDirty(roomID)
	return true, nil
}

// pushEvent queues an event push and holds it until acknowledged.
func (s *session) pushEvent(roomID string, fe *feedEvent) bool {
	frame, err := fe.frame(s.codec)
	if err != nil {
		slog.Error("native: encode event", "err", err)
		return true
	}
	s.mu.Lock()
	s.unacked[roomID] = append(s.unacked[roomID], unackedAt{seq: fe.seq, frame: frame, sent: time.Now()})
	s.nUnacked++
	if s.nUnacked == 1 {
		s.retx.Reset(s.srv.cfg.RetransmitAfter)
	}
	over := s.nUnacked > s.srv.cfg.MaxUnacked
	s.mu.Unlock()
	if over {
		s.closeWith(CloseSlowConsumer, fmt.Sprintf("more than %d pushes unacknowledged", s.srv.cfg.MaxUnacked))
		return false
	}
	return s.enqueue(frame)
}

func (s *session) ack(rooms map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for roomID, seq := range rooms {
		q := s.unacked[roomID]
		i, _ := slices.BinarySearchFunc(q, seq+1, func(u unackedAt, t int64) int { return int(u.seq - t) })
		s.nUnacked -= i
		if i == len(q) {
			delete(s.unacked, roomID)
		} else {
			s.unacked[roomID] = q[i:]
		}
	}
}

// retransmit resends pushes unacknowledged for longer than RetransmitAfter, in
// order per room.
func (s *session) retransmit() {
	cutoff := time.Now().Add(-s.srv.cfg.RetransmitAfter)
	var frames [][]byte
	s.mu.Lock()
	if s.nUnacked > 0 {
		s.retx.Reset(s.srv.cfg.RetransmitAfter / 2)
	}
	for roomID, q := range s.unacked {
		if len(q) == 0 || q[0].sent.After(cutoff) {
			continue
		}
		for i := range q {
			q[i].sent = time.Now()
			frames = append(frames, q[i].frame)
		}
		s.unacked[roomID] = q
	}
	s.mu.Unlock()
	for _, f := range frames {
		if !s.enqueue(f) {
			return
		}
	}
}
