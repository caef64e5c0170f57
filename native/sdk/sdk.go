// Package sdk is a Go client for Hongyan's native protocol: one connection (TCP,
// TLS or WebSocket) with typed ops, pushed room events in order with their seq,
// automatic acknowledgement, and reconnect-and-resume that delivers every event
// exactly once across connection losses and server restarts.
//
//	c, err := sdk.Dial(ctx, sdk.Options{Addr: "tcp://127.0.0.1:8009", User: "alice", Password: "…"})
//	c.SendText(ctx, roomID, "hello")
//	for p := range c.Events() { … }
package sdk

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/hongyan/hongyan/native"
)

// Options configure a client.
type Options struct {
	// Addr is tcp://HOST:PORT, tls://HOST:PORT, or a ws:// or wss:// URL
	// (the server's /_hongyan/native).
	Addr string
	// Codec is the session's codec; JSON by default.
	Codec native.Codec
	// Token authenticates; otherwise User and Password log in (creating a device,
	// whose token the client then reuses on reconnect).
	Token          string
	User, Password string
	DeviceID       string
	// TLS configures tls:// and wss:// connections.
	TLS *tls.Config
	// Dialer, if set, dials tcp:// and tls:// addresses (to pick the local
	// address, say).
	Dialer *net.Dialer
	// NoReconnect turns automatic reconnection off.
	NoReconnect bool
	// Resume seeds the last seq per room, to continue a previous client's stream.
	Resume map[string]int64
	// ClientName is sent in the hello.
	ClientName string
	// EventBuffer is how many pushes Events holds before the client stops reading
	// from the connection. Default 1024.
	EventBuffer int
}

// Push is one pushed item; exactly one of its pointers is set.
type Push struct {
	Event   *native.EventPush
	Typing  *native.TypingPush
	Receipt *native.ReceiptPush
	Social  *SocialPush
	// Call is set, beside Event, when the event is a 1:1 call signal (m.call.*).
	Call *CallPush
	// Notification says an event notifies the user (their push rules matched).
	Notification *native.NotificationPush
}

// SocialPush is a typed friends-and-groups push: Kind is its op (friend_request,
// friend_answer, friend_removed or group_change).
type SocialPush struct {
	Kind string
	native.SocialPush
}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("sdk: client closed")

// ErrDisconnected is returned by calls in flight when the connection drops; ops
// with a txn_id can be retried safely.
var ErrDisconnected = errors.New("sdk: connection lost")

// Client is a native-protocol client. It is safe for concurrent use.
type Client struct {
	opts   Options
	events chan Push
	closed chan struct{}
	once   sync.Once
	nextID atomic.Int64

	UserID, DeviceID string

	mu        sync.Mutex
	conn      net.Conn                 // guarded by mu
	token     string                   // guarded by mu
	pending   map[string]chan rawReply // guarded by mu
	last      map[string]int64         // room → last seq delivered; guarded by mu
	toAck     map[string]int64         // guarded by mu
	heartbeat time.Duration            // guarded by mu
	closeCode string                   // the last close push's code; guarded by mu
	wmu       sync.Mutex               // serialises frame writes
	connected chan struct{}            // closed when a session is up; guarded by mu
}

type rawReply struct {
	body []byte
	err  error
}

// Dial connects, authenticates and starts receiving pushes.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 1024
	}
	c := &Client{opts: opts, events: make(chan Push, opts.EventBuffer), closed: make(chan struct{}), token: opts.Token,
		pending: map[string]chan rawReply{}, last: map[string]int64{}, toAck: map[string]int64{}}
	for r, s := range opts.Resume {
		c.last[r] = s
	}
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	go c.acker()
	return c, nil
}

// Events delivers pushes in order. Read it promptly: the server disconnects
// clients that fall far behind (and the client then resumes).
func (c *Client) Events() <-chan Push { return c.events }

// Token is the session's access token (from Options or from the password login).
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// LastSeqs returns the last seq delivered per room.
func (c *Client) LastSeqs() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.last))
	for k, v := range c.last {
		out[k] = v
	}
	return out
}

// Done is closed when the client is closed: by Close, when the connection drops
// with NoReconnect, or when the server ends the session because its access token
// was revoked (CloseCode then says logged_out), since reconnecting with that token
// could only fail.
func (c *Client) Done() <-chan struct{} { return c.closed }

// CloseCode is the code of the last close push the server sent.
func (c *Client) CloseCode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

func dialConn(ctx context.Context, opts Options) (net.Conn, error) {
	u, err := url.Parse(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("sdk: address %q: %w", opts.Addr, err)
	}
	d := opts.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	switch u.Scheme {
	case "tcp":
		return d.DialContext(ctx, "tcp", u.Host)
	case "tls":
		td := tls.Dialer{NetDialer: d, Config: opts.TLS}
		return td.DialContext(ctx, "tcp", u.Host)
	case "ws", "wss":
		wo := &websocket.DialOptions{}
		if opts.TLS != nil {
			wo.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: opts.TLS}}
		}
		ws, _, err := websocket.Dial(ctx, opts.Addr, wo)
		if err != nil {
			return nil, err
		}
		ws.SetReadLimit(native.MaxFrame + native.HeaderSize)
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
	}
	return nil, fmt.Errorf("sdk: address %q: want tcp://, tls://, ws:// or wss://", opts.Addr)
}

// connect opens a connection and runs hello, auth and resume on it.
func (c *Client) connect(ctx context.Context) error {
	conn, err := dialConn(ctx, c.opts)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.conn = conn
	c.connected = make(chan struct{})
	c.mu.Unlock()
	go c.reader(conn)
	fail := func(err error) error {
		conn.Close()
		return err
	}
	var hello native.HelloReply
	if err := c.call(ctx, "hello", native.Hello{Version: native.ProtocolVersion, Client: c.opts.ClientName}, &hello); err != nil {
		return fail(fmt.Errorf("sdk: hello: %w", err))
	}
	auth := native.Auth{Token: c.Token(), DeviceID: c.opts.DeviceID}
	if auth.Token == "" {
		auth.User, auth.Password = c.opts.User, c.opts.Password
	}
	var who native.AuthReply
	if err := c.call(ctx, "auth", auth, &who); err != nil {
		return fail(fmt.Errorf("sdk: auth: %w", err))
	}
	c.mu.Lock()
	if who.AccessToken != "" {
		c.token = who.AccessToken
	}
	c.UserID, c.DeviceID = who.UserID, who.DeviceID
	c.heartbeat = time.Duration(hello.HeartbeatMs) * time.Millisecond
	resume := native.Resume{Rooms: make(map[string]int64, len(c.last))}
	for r, s := range c.last {
		resume.Rooms[r] = s
	}
	c.mu.Unlock()
	if err := c.call(ctx, "resume", resume, nil); err != nil {
		return fail(fmt.Errorf("sdk: resume: %w", err))
	}
	c.mu.Lock()
	close(c.connected)
	c.mu.Unlock()
	go c.pinger(conn)
	return nil
}

// reader decodes frames from conn until it fails, then reconnects.
func (c *Client) reader(conn net.Conn) {
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		codec, body, err := native.ReadFrame(r, native.MaxFrame)
		if err != nil {
			break
		}
		var env native.Envelope
		if native.Unmarshal(codec, body, &env) != nil {
			continue
		}
		switch env.Op {
		case "reply", "error":
			c.mu.Lock()
			ch := c.pending[env.ID]
			delete(c.pending, env.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- rawReply{body: body}
			}
		case "event":
			var m native.Message[native.EventPush]
			if native.Unmarshal(codec, body, &m) != nil {
				continue
			}
			c.mu.Lock()
			dup := m.Data.Seq <= c.last[m.Data.RoomID]
			if !dup {
				c.last[m.Data.RoomID] = m.Data.Seq
			}
			c.toAck[m.Data.RoomID] = max(c.toAck[m.Data.RoomID], m.Data.Seq)
			c.mu.Unlock()
			if !dup {
				if !c.deliver(Push{Event: &m.Data, Call: callPush(m.Data.RoomID, m.Data.Event)}) {
					conn.Close()
					return
				}
			}
		case "typing":
			var m native.Message[native.TypingPush]
			if native.Unmarshal(codec, body, &m) == nil {
				c.deliver(Push{Typing: &m.Data})
			}
		case "receipt":
			var m native.Message[native.ReceiptPush]
			if native.Unmarshal(codec, body, &m) == nil {
				c.deliver(Push{Receipt: &m.Data})
			}
		case "friend_request", "friend_answer", "friend_removed", "group_change":
			var m native.Message[native.SocialPush]
			if native.Unmarshal(codec, body, &m) == nil {
				c.deliver(Push{Social: &SocialPush{Kind: env.Op, SocialPush: m.Data}})
			}
		case "notification":
			var m native.Message[native.NotificationPush]
			if native.Unmarshal(codec, body, &m) == nil {
				c.deliver(Push{Notification: &m.Data})
			}
		case "close":
			var m native.Message[native.ClosePush]
			if native.Unmarshal(codec, body, &m) == nil {
				c.mu.Lock()
				c.closeCode = m.Data.Code
				c.mu.Unlock()
			}
		}
	}
	conn.Close()
	c.mu.Lock()
	for id, ch := range c.pending {
		ch <- rawReply{err: ErrDisconnected}
		delete(c.pending, id)
	}
	current := c.conn == conn
	// Reconnecting cannot help a dead token or a locked account: the app decides
	// (log in again, or tell the user and try later).
	loggedOut := c.closeCode == native.CloseLoggedOut || c.closeCode == native.CloseLocked
	c.mu.Unlock()
	switch {
	case current && loggedOut:
		c.Close()
	case current:
		go c.reconnect()
	}
}

func (c *Client) deliver(p Push) bool {
	select {
	case c.events <- p:
		return true
	case <-c.closed:
		return false
	}
}

// reconnect dials again with backoff until a session is up or the client closes.
func (c *Client) reconnect() {
	if c.opts.NoReconnect {
		c.Close()
		return
	}
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-c.closed:
			return
		case <-time.After(backoff):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.connect(ctx)
		cancel()
		if err == nil {
			return
		}
		// A token the server no longer knows will not work on the next try either.
		var ne *native.Error
		if errors.As(err, &ne) && ne.Code == "M_UNKNOWN_TOKEN" {
			c.Close()
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// pinger sends heartbeats on conn while it is the current connection.
func (c *Client) pinger(conn net.Conn) {
	c.mu.Lock()
	every := c.heartbeat
	c.mu.Unlock()
	if every <= 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
			c.mu.Lock()
			current := c.conn == conn
			c.mu.Unlock()
			if !current {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), every)
			c.call(ctx, "ping", struct{}{}, nil)
			cancel()
		}
	}
}

// acker acknowledges delivered events in batches.
func (c *Client) acker() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		}
		c.mu.Lock()
		if len(c.toAck) == 0 {
			c.mu.Unlock()
			continue
		}
		ack := native.Ack{Rooms: c.toAck}
		c.toAck = map[string]int64{}
		c.mu.Unlock()
		c.write("", "ack", ack)
	}
}

func (c *Client) write(id, op string, data any) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return ErrDisconnected
	}
	body, err := native.Marshal(c.opts.Codec, native.Message[any]{ID: id, Op: op, Data: data})
	if err != nil {
		return err
	}
	frame, err := native.AppendFrame(nil, c.opts.Codec, body)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(frame)
	return err
}

// call sends a request and decodes its reply's data into reply (if not nil). An
// error reply is returned as *native.Error.
func (c *Client) call(ctx context.Context, op string, req, reply any) error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	id := strconv.FormatInt(c.nextID.Add(1), 10)
	ch := make(chan rawReply, 1)
	c.mu.Lock()
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
	if err := c.write(id, op, req); err != nil {
		forget()
		return ErrDisconnected
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		var env native.Envelope
		native.Unmarshal(c.opts.Codec, r.body, &env)
		if env.Op == "error" {
			var m native.Message[native.Error]
			if err := native.Unmarshal(c.opts.Codec, r.body, &m); err != nil {
				return err
			}
			return &m.Data
		}
		if reply == nil {
			return nil
		}
		return native.UnmarshalData(c.opts.Codec, r.body, reply)
	case <-ctx.Done():
		forget()
		return ctx.Err()
	case <-c.closed:
		return ErrClosed
	}
}

// Call runs any op by name; the typed methods wrap it. For ops made while the
// connection is down it waits for the reconnect (up to ctx).
func (c *Client) Call(ctx context.Context, op string, req, reply any) error {
	c.mu.Lock()
	up := c.connected
	c.mu.Unlock()
	select {
	case <-up:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closed:
		return ErrClosed
	}
	return c.call(ctx, op, req, reply)
}

// Drop cuts the connection as a network failure would; the client reconnects and
// resumes. For tests and for clients that know their network changed.
func (c *Client) Drop() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// Close ends the session and stops reconnecting.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.write("", "close", struct{}{}) // best effort: the server answers by closing
		c.mu.Lock()
		conn := c.conn
		c.conn = nil // so the reader does not reconnect
		c.mu.Unlock()
		close(c.closed)
		if conn != nil {
			conn.Close()
		}
	})
	return nil
}
