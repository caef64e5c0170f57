package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hongyan/hongyan/native"
)

// nativeConn is a minimal native-protocol client for load: it keeps no more state
// than a measurement needs, so the harness's own cost stays small next to 10 000
// connections.
type nativeConn struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
}

func dialNative(ctx context.Context, addr, token string) (*nativeConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		return nil, err
	}
	c := &nativeConn{conn: conn, r: bufio.NewReaderSize(conn, 4096)}
	for i, step := range []struct {
		op   string
		data any
	}{
		{"hello", native.Hello{Version: native.ProtocolVersion, Client: "loadgen"}},
		{"auth", native.Auth{Token: token}},
		{"resume", native.Resume{}},
	} {
		if err := c.write(strconv.Itoa(i), step.op, step.data); err != nil {
			conn.Close()
			return nil, err
		}
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, _, err := c.readReply(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%s: %w", step.op, err)
		}
	}
	conn.SetReadDeadline(time.Time{})
	return c, nil
}

func (c *nativeConn) write(id, op string, data any) error {
	body, err := native.Marshal(native.JSON, native.Message[any]{ID: id, Op: op, Data: data})
	if err != nil {
		return err
	}
	frame, _ := native.AppendFrame(nil, native.JSON, body)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.conn.Write(frame)
	return err
}

// readReply reads frames until a reply or error arrives.
func (c *nativeConn) readReply() (native.Envelope, []byte, error) {
	for {
		_, body, err := native.ReadFrame(c.r, native.MaxFrame)
		if err != nil {
			return native.Envelope{}, nil, err
		}
		var env native.Envelope
		if err := native.Unmarshal(native.JSON, body, &env); err != nil {
			return env, nil, err
		}
		switch env.Op {
		case "reply":
			return env, body, nil
		case "error":
			var m native.Message[native.Error]
			native.Unmarshal(native.JSON, body, &m)
			return env, body, &m.Data
		}
	}
}

// RunNativeIdle opens conns native connections (as users users, several sessions
// each) that then sit idle, and reports the connect+auth rate and the server's
// resident memory per connection.
func RunNativeIdle(ctx context.Context, c Config, addr string, conns, users int) (Result, error) {
	r := Result{"scenario": "native_idle", "connections": conns}
	if c.Proc == nil {
		return nil, fmt.Errorf("native_idle needs the server's pid")
	}
	accounts, _, err := c.register(ctx, users, 8, "nidle")
	if err != nil {
		return nil, err
	}
	before, err := c.Proc.QuietRSSMiB()
	if err != nil {
		return nil, err
	}
	open := make([]*nativeConn, conns)
	defer func() {
		for _, nc := range open {
			if nc != nil {
				nc.conn.Close()
			}
		}
	}()
	lat := make([]time.Duration, conns)
	start := time.Now()
	if err := parallel(conns, 64, func(i int) error {
		t := time.Now()
		nc, err := dialNative(ctx, addr, accounts[i%users].Token)
		lat[i] = time.Since(t)
		open[i] = nc
		return err
	}); err != nil {
		return nil, err
	}
	wall := time.Since(start)
	r["connect_auth_per_s"] = round(float64(conns) / wall.Seconds())
	percentiles(r, "connect_", lat)
	time.Sleep(3 * time.Second)
	after, err := c.Proc.StableRSSMiB(30 * time.Second)
	if err != nil {
		return nil, err
	}
	r["rss_before_mib"], r["rss_after_mib"] = round(before), round(after)
	r["kib_per_connection"] = round((after - before) * 1024 / float64(conns))
	return r, nil
}

// RunNativeFanout connects members users over the native protocol to one room
// while a Matrix client sends into it at rate messages per second, and reports the
// delivery latency from send to push and the share delivered.
func RunNativeFanout(ctx context.Context, c Config, addr string, members int, rate float64, d time.Duration) (Result, error) {
	r := Result{"scenario": "native_fanout", "members": members, "rate": rate}
	users, _, err := c.register(ctx, members+1, 8, "nfan")
	if err != nil {
		return nil, err
	}
	sender := users[members]
	roomID, err := sender.CreateRoom(ctx, "native fan-out")
	if err != nil {
		return nil, err
	}
	if err := parallel(members, 8, func(i int) error { return users[i].Join(ctx, roomID) }); err != nil {
		return nil, err
	}
	conns := make([]*nativeConn, members)
	if err := parallel(members, 32, func(i int) error {
		nc, err := dialNative(ctx, addr, users[i].Token)
		conns[i] = nc
		return err
	}); err != nil {
		return nil, err
	}
	defer func() {
		for _, nc := range conns {
			nc.conn.Close()
		}
	}()

	var mu sync.Mutex
	var lat []time.Duration
	var delivered atomic.Int64
	var wg sync.WaitGroup
	for _, nc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lastSeq int64
			sinceAck := 0
			for {
				_, body, err := native.ReadFrame(nc.r, native.MaxFrame)
				if err != nil {
					return
				}
				var m native.Message[native.EventPush]
				if native.Unmarshal(native.JSON, body, &m) != nil || m.Op != "event" {
					continue
				}
				now := time.Now()
				if b, ok := m.Data.Event.Content["body"].(string); ok && strings.HasPrefix(b, "t=") {
					if ns, err := strconv.ParseInt(b[2:], 10, 64); err == nil {
						mu.Lock()
						lat = append(lat, now.Sub(time.Unix(0, ns)))
						mu.Unlock()
						delivered.Add(1)
					}
				}
				lastSeq = m.Data.Seq
				if sinceAck++; sinceAck >= 20 {
					sinceAck = 0
					nc.write("", "ack", native.Ack{Rooms: map[string]int64{roomID: lastSeq}})
				}
			}
		}()
	}
	cpu, err := c.startCPU()
	if err != nil {
		return nil, err
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	deadline := time.Now().Add(d)
	sent := 0
	for time.Now().Before(deadline) {
		<-tick.C
		if err := sender.Send(ctx, roomID, fmt.Sprintf("nf%d", sent), fmt.Sprintf("t=%d", time.Now().UnixNano())); err != nil {
			return nil, err
		}
		sent++
	}
	tick.Stop()
	want := int64(sent * members)
	for end := time.Now().Add(10 * time.Second); delivered.Load() < want && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if err := cpu.stop(r); err != nil {
		return nil, err
	}
	mu.Lock()
	percentiles(r, "", lat)
	mu.Unlock()
	r["messages"] = sent
	r["delivered_share"] = round(float64(delivered.Load()) / float64(want))
	if sent > 0 {
		if cpuS, ok := r["cpu_s"].(float64); ok {
			r["cpu_ms_per_msg"] = round(cpuS * 1000 / float64(sent))
		}
	}
	return r, nil
}
