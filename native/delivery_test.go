package native_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// sendMessages sends text messages prefix0 … prefix(n-1) as a Matrix client.
func sendMessages(t *testing.T, c *testserver.Client, roomID, prefix string, n int) {
	t.Helper()
	for i := range n {
		c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%s%d", roomID, prefix, i),
			map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%s%d", prefix, i)}, nil)
	}
}

// collect reads message pushes until it holds n, checking that seqs rise by one.
func collect(t *testing.T, c *sdk.Client, n int, got []string, lastSeq *int64, during func(received int)) []string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case p := <-c.Events():
			if p.Event == nil {
				continue
			}
			if *lastSeq != 0 && p.Event.Seq != *lastSeq+1 {
				t.Fatalf("seq %d after %d: a gap or a repeat", p.Event.Seq, *lastSeq)
			}
			*lastSeq = p.Event.Seq
			if p.Event.Event.Type == "m.room.message" {
				got = append(got, fmt.Sprint(p.Event.Event.Content["body"]))
				if during != nil {
					during(len(got))
				}
			}
		case <-deadline:
			t.Fatalf("received %d of %d messages within 30 s", len(got), n)
		}
	}
	return got
}

func want(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// TestResumeAfterCutAndRestart: the connection is cut while 100 messages stream in,
// and later the server restarts mid-stream; the client ends up with every message
// exactly once, in order.
func TestResumeAfterCutAndRestart(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		bob := srv.Register(t, "bob", "pw")
		srv.Register(t, "alice", "pw")
		var room struct {
			RoomID string `json:"room_id"`
		}
		bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
		// A one-push buffer makes the client stop reading while it is behind, so
		// pushes really are in flight (queued at the server, in socket buffers) when
		// the connection goes.
		alice := dial(t, srv, sdk.Options{User: "alice", Password: "pw", EventBuffer: 1})
		if _, err := alice.Join(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		var last int64
		next(t, alice, "alice's join", eventOf("m.room.member", nil))
		last = alice.LastSeqs()[room.RoomID]

		go sendMessages(t, bob, room.RoomID, "cut", 100)
		got := collect(t, alice, 100, nil, &last, func(n int) {
			if n == 20 {
				alice.Drop()
			}
		})
		if strings.Join(got, ",") != strings.Join(want("cut", 100), ",") {
			t.Fatalf("after a cut got %q", got)
		}

		// Now a restart while 100 more are in flight: the first 50 are committed
		// before the server stops, the rest after it is back.
		sendMessages(t, bob, room.RoomID, "restart", 50)
		got = collect(t, alice, 5, nil, &last, nil)
		srv.Restart(t)
		sendMessages(t, bob, room.RoomID, "restart", 0)
		for i := 50; i < 100; i++ {
			bob.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/restart%d", room.RoomID, i),
				map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("restart%d", i)}, nil)
		}
		got = collect(t, alice, 100, got, &last, nil)
		if strings.Join(got, ",") != strings.Join(want("restart", 100), ",") {
			t.Fatalf("across a restart got %q", got)
		}
	})
}

// rawConn speaks the protocol by hand, to send what an SDK never would.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func rawDial(t *testing.T, srv *testserver.Server) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.NativeAddr, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *rawConn) write(codec native.Codec, body []byte) {
	c.t.Helper()
	frame, err := native.AppendFrame(nil, codec, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(frame); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawConn) op(id, op string, data any) {
	c.t.Helper()
	body, _ := native.Marshal(native.JSON, native.Message[any]{ID: id, Op: op, Data: data})
	c.write(native.JSON, body)
}

// read returns the next frame's envelope and body; an error if none comes in d.
func (c *rawConn) read(d time.Duration) (native.Envelope, []byte, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	_, body, err := native.ReadFrame(c.r, native.MaxFrame)
	if err != nil {
		return native.Envelope{}, nil, err
	}
	var env native.Envelope
	native.Unmarshal(native.JSON, body, &env)
	return env, body, nil
}

// expect reads frames until one with op arrives and decodes its data.
func expect[T any](c *rawConn, op string) T {
	c.t.Helper()
	for {
		env, body, err := c.read(5 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", op, err)
		}
		if env.Op == op {
			var m native.Message[T]
			if err := native.Unmarshal(native.JSON, body, &m); err != nil {
				c.t.Fatal(err)
			}
			return m.Data
		}
	}
}

// session opens a raw session as token's user and starts pushes.
func (c *rawConn) session(token string) {
	c.t.Helper()
	c.op("1", "hello", native.Hello{Version: native.ProtocolVersion})
	expect[native.HelloReply](c, "reply")
	c.op("2", "auth", native.Auth{Token: token})
	expect[native.AuthReply](c, "reply")
	c.op("3", "resume", native.Resume{})
	expect[struct{}](c, "reply")
}

func TestRetransmitUntilAcked(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, storagetest.Engines()[0], func(c *config.Config) { c.Native.RetransmitAfter = 200 * time.Millisecond })
	bob := srv.Register(t, "bob", "pw")
	var room struct {
		RoomID string `json:"room_id"`
	}
	bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, &room)
	c := rawDial(t, srv)
	c.session(bob.Token)
	sendMessages(t, bob, room.RoomID, "m", 1)
	first := expect[native.EventPush](c, "event")
	again := expect[native.EventPush](c, "event")
	if again.Seq != first.Seq || again.Event.EventID != first.Event.EventID {
		t.Fatalf("retransmitted %d %s; want %d %s", again.Seq, again.Event.EventID, first.Seq, first.Event.EventID)
	}
	c.op("", "ack", native.Ack{Rooms: map[string]int64{room.RoomID: first.Seq}})
	// Ops run in order: once the ping is answered the ack has been applied, and a
	// retransmission already on its way before it is allowed.
	c.op("p", "ping", nil)
	for {
		env, _, err := c.read(5 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the ping's reply: %v", err)
		}
		if env.Op == "reply" {
			break
		}
	}
	// The sentinel: a second, unacknowledged message is retransmitted. The room's
	// unacknowledged pushes are resent together and in order, so had the first
	// still been unacknowledged it would have come again before the second did.
	sendMessages(t, bob, room.RoomID, "sentinel", 1)
	second := expect[native.EventPush](c, "event")
	for second.Seq == first.Seq { // a retransmission gathered just before the ack, written just after
		second = expect[native.EventPush](c, "event")
	}
	for {
		got := expect[native.EventPush](c, "event")
		if got.Seq == first.Seq {
			t.Fatalf("after the ack the server retransmitted %d %s", got.Seq, got.Event.EventID)
		}
		if got.Seq == second.Seq {
			break // retransmitted, alone
		}
		t.Fatalf("push %d %s; want a retransmission of %d", got.Seq, got.Event.EventID, second.Seq)
	}
}

func TestSlowConsumerIsDisconnectedOthersUnaffected(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, storagetest.Engines()[0], func(c *config.Config) { c.Native.MaxUnacked = 20 })
	bob := srv.Register(t, "bob", "pw")
	srv.Register(t, "carol", "pw")
	var room struct {
		RoomID string `json:"room_id"`
	}
	bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
	carol := dial(t, srv, sdk.Options{User: "carol", Password: "pw"})
	if _, err := carol.Join(context.Background(), room.RoomID); err != nil {
		t.Fatal(err)
	}
	slow := rawDial(t, srv)
	slow.session(bob.Token) // reads, never acknowledges

	go sendMessages(t, bob, room.RoomID, "m", 40)
	closed := expect[native.ClosePush](slow, "close")
	if closed.Code != native.CloseSlowConsumer {
		t.Errorf("close code = %q; want %s", closed.Code, native.CloseSlowConsumer)
	}
	var last int64
	got := collect(t, carol, 40, nil, &last, nil)
	if strings.Join(got, ",") != strings.Join(want("m", 40), ",") {
		t.Errorf("carol got %q", got)
	}
}

func TestBadInputGetsTypedErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, storagetest.Engines()[0], func(c *config.Config) {
		c.Native.IdleTimeout = 400 * time.Millisecond
		c.Native.MaxFrameBytes = 64 << 10
	})
	alice := srv.Register(t, "alice", "pw")
	hello, _ := native.Marshal(native.JSON, native.Message[native.Hello]{ID: "h", Op: "hello", Data: native.Hello{Version: 1}})

	// Framing and protocol errors close the session with a reason.
	for _, tc := range []struct {
		name   string
		frames func(c *rawConn)
		code   string
	}{
		{"unknown codec byte", func(c *rawConn) { c.conn.Write([]byte{7, 0, 0, 2, '{', '}'}) }, native.CloseBadFrame},
		{"frame over the limit", func(c *rawConn) { c.conn.Write([]byte{0, 0xff, 0xff, 0xff}) }, native.CloseTooLarge},
		{"no hello first", func(c *rawConn) { c.op("1", "auth", native.Auth{Token: alice.Token}) }, native.CloseProtocol},
		{"undecodable first frame", func(c *rawConn) { c.write(native.JSON, []byte("\x00\x01garbage")) }, native.CloseProtocol},
		{"unsupported version", func(c *rawConn) { c.op("1", "hello", native.Hello{Version: 99}) }, native.CloseProtocol},
		{"codec switched", func(c *rawConn) {
			c.write(native.JSON, hello)
			body, _ := native.Marshal(native.CBOR, native.Message[struct{}]{ID: "p", Op: "ping"})
			c.write(native.CBOR, body)
		}, native.CloseProtocol},
		{"truncated frame", func(c *rawConn) {
			c.write(native.JSON, hello)
			c.conn.Write([]byte{0, 0, 0, 50, '{'})
			c.conn.(*net.TCPConn).CloseWrite()
		}, native.CloseBadFrame},
		{"idle", func(c *rawConn) { c.write(native.JSON, hello) }, native.CloseIdle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, srv)
			tc.frames(c)
			got := expect[native.ClosePush](c, "close")
			if got.Code != tc.code {
				t.Errorf("close = %+v; want %s", got, tc.code)
			}
			if _, _, err := c.read(2 * time.Second); err == nil {
				t.Errorf("connection still open after close")
			}
		})
	}

	// Request errors get an error reply, and the session goes on.
	c := rawDial(t, srv)
	c.write(native.JSON, hello)
	expect[native.HelloReply](c, "reply")
	for _, tc := range []struct {
		name string
		send func()
		code string
	}{
		{"not JSON", func() { c.write(native.JSON, []byte("{not json")) }, "M_NOT_JSON"},
		{"op before auth", func() { c.op("a", "send", native.Send{RoomID: "!r:localhost", Body: "x"}) }, "M_MISSING_TOKEN"},
		{"unknown op", func() { c.op("b", "fly", nil) }, "M_UNRECOGNIZED"},
		{"bad token", func() { c.op("c", "auth", native.Auth{Token: "nope"}) }, "M_UNKNOWN_TOKEN"},
		{"auth without credentials", func() { c.op("d", "auth", native.Auth{}) }, "M_MISSING_PARAM"},
		{"wrong password", func() { c.op("e", "auth", native.Auth{User: "alice", Password: "wrong"}) }, "M_FORBIDDEN"},
		{"data of the wrong shape", func() { c.op("f", "auth", "just a string") }, "M_BAD_JSON"},
	} {
		tc.send()
		if e := expect[native.Error](c, "error"); e.Code != tc.code {
			t.Errorf("%s: error %+v; want %s", tc.name, e, tc.code)
		}
	}
	c.op("g", "ping", nil)
	expect[struct{}](c, "reply")
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, storagetest.Engines()[0], func(c *config.Config) {
		c.RateLimit.Enabled, c.RateLimit.PerSecond, c.RateLimit.Burst = true, 1, 5
	})
	srv.Register(t, "alice", "pw")
	c := dial(t, srv, sdk.Options{User: "alice", Password: "pw"})
	var limited *native.Error
	for range 20 {
		if err := c.Call(context.Background(), "presence", native.Presence{Presence: "online"}, nil); err != nil {
			limited, _ = err.(*native.Error)
			break
		}
	}
	if limited == nil || limited.Code != "M_LIMIT_EXCEEDED" || limited.RetryAfterMs <= 0 {
		t.Errorf("20 requests at once: %v; want M_LIMIT_EXCEEDED with retry_after_ms", limited)
	}
}

// A session whose device logs out elsewhere is closed at a heartbeat.
func TestLoggedOutSessionCloses(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, storagetest.Engines()[0], func(c *config.Config) { c.Native.TokenRecheck = time.Millisecond })
	alice := srv.Register(t, "alice", "pw")
	c := rawDial(t, srv)
	c.session(alice.Token)
	c.op("p1", "ping", nil)
	expect[struct{}](c, "reply")
	alice.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, nil)
	time.Sleep(5 * time.Millisecond)
	c.op("p2", "ping", nil)
	if got := expect[native.ClosePush](c, "close"); got.Code != native.CloseLoggedOut {
		t.Errorf("close = %+v; want %s", got, native.CloseLoggedOut)
	}
}

// TestRefusedRequestAnsweredBeforeClose: a request the session refuses and closes
// over (a hello of another protocol version, an undecodable hello, an op before the
// hello) gets its error reply, with the request's ID, before the close frame: a
// client waiting on that ID learns why instead of seeing the connection drop.
func TestRefusedRequestAnsweredBeforeClose(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, storagetest.Engines()[0])
	for _, tc := range []struct {
		name  string
		id    string
		frame func(c *rawConn)
	}{
		{"unsupported version", "v", func(c *rawConn) { c.op("v", "hello", native.Hello{Version: 99}) }},
		{"hello of the wrong shape", "w", func(c *rawConn) { c.op("w", "hello", "not a hello") }},
		{"op before the hello", "a", func(c *rawConn) { c.op("a", "ping", nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, srv)
			tc.frame(c)
			env, body, err := c.read(5 * time.Second)
			if err != nil {
				t.Fatalf("first frame: %v; want the error reply", err)
			}
			var m native.Message[native.Error]
			if err := native.Unmarshal(native.JSON, body, &m); err != nil {
				t.Fatal(err)
			}
			if env.Op != "error" || env.ID != tc.id || m.Data.Code == "" {
				t.Errorf("first frame = op %q id %q %+v; want an error with id %q", env.Op, env.ID, m.Data, tc.id)
			}
			if got := expect[native.ClosePush](c, "close"); got.Code != native.CloseProtocol {
				t.Errorf("close = %+v; want %s", got, native.CloseProtocol)
			}
		})
	}
}
