package native_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// limited turns the shared rate limiter on at a rate a test can exhaust at once.
func limited(perSecond float64, burst int) testserver.Option {
	return func(c *config.Config) {
		c.RateLimit.Enabled, c.RateLimit.PerSecond, c.RateLimit.Burst = true, perSecond, burst
	}
}

// from returns a dialer whose connections come from the loopback address ip, so a
// test can play several remote addresses.
func from(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// tryAuth opens a native session from ip with a user and password and returns
// the error the server answered, or nil for a session (which it closes).
func tryAuth(t *testing.T, srv *testserver.Server, ip, user, password string) *native.Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, sdk.Options{Addr: srv.NativeAddr, Dialer: from(ip), User: user, Password: password, NoReconnect: true})
	if err == nil {
		c.Close()
		return nil
	}
	var ne *native.Error
	if !errors.As(err, &ne) {
		t.Fatalf("auth %s from %s: %v; want a reply", user, ip, err)
	}
	return ne
}

// TestAuthThrottledPerAddress: wrong native passwords from one address meet
// M_LIMIT_EXCEEDED with retry_after_ms long before the 50th; the right password is
// refused too until the wait the server named has passed; another address is not
// affected.
func TestAuthThrottledPerAddress(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		srv.Register(t, "alice", "pw")
		srv.Register(t, "bob", "pw")
		const attacker = "127.0.0.2"
		var throttled *native.Error
		for i := 1; i <= 50 && throttled == nil; i++ {
			// Every guess names another account: only the address ties them.
			switch e := tryAuth(t, srv, attacker, fmt.Sprintf("user%d", i), "guess"); {
			case e == nil:
				t.Fatalf("guess %d logged in", i)
			case e.Code == "M_LIMIT_EXCEEDED":
				if i >= 50 || e.RetryAfterMs <= 0 {
					t.Fatalf("guess %d: %v retry_after_ms %d; want the limit before the 50th, with a wait", i, e, e.RetryAfterMs)
				}
				throttled = e
			case e.Code != "M_FORBIDDEN":
				t.Fatalf("guess %d: %v; want M_FORBIDDEN or M_LIMIT_EXCEEDED", i, e)
			}
		}
		if throttled == nil {
			t.Fatal("50 wrong passwords from one address: none throttled; want M_LIMIT_EXCEEDED before the 50th")
		}
		if e := tryAuth(t, srv, attacker, "alice", "pw"); e == nil || e.Code != "M_LIMIT_EXCEEDED" {
			t.Fatalf("right password from the throttled address = %v; want M_LIMIT_EXCEEDED", e)
		}
		if e := tryAuth(t, srv, "127.0.0.3", "bob", "pw"); e != nil {
			t.Fatalf("right password from another address = %v; want a session", e)
		}
		// The bucket refills at the configured rate: after the wait the server
		// names, the right password works again.
		deadline := time.Now().Add(10 * time.Second)
		for {
			e := tryAuth(t, srv, attacker, "alice", "pw")
			if e == nil {
				break
			}
			if e.Code != "M_LIMIT_EXCEEDED" || time.Now().After(deadline) {
				t.Fatalf("right password after the wait = %v; want a session", e)
			}
			time.Sleep(time.Duration(e.RetryAfterMs) * time.Millisecond)
		}
	}, limited(2, 10))
}

// TestAuthThrottledPerAccount: guesses at one account from ever new addresses
// still meet its limit, which then refuses the right password from anywhere, on
// the native protocol and on HTTP /login alike; other accounts log in.
func TestAuthThrottledPerAccount(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		srv.Register(t, "bob", "pw")
		throttledAt := 0
		for i := 1; i <= 50 && throttledAt == 0; i++ {
			switch e := tryAuth(t, srv, fmt.Sprintf("127.0.1.%d", i), "alice", "guess"); {
			case e == nil:
				t.Fatalf("guess %d logged in", i)
			case e.Code == "M_LIMIT_EXCEEDED":
				if e.RetryAfterMs <= 0 {
					t.Fatalf("guess %d: %v without retry_after_ms", i, e)
				}
				throttledAt = i
			case e.Code != "M_FORBIDDEN":
				t.Fatalf("guess %d: %v; want M_FORBIDDEN or M_LIMIT_EXCEEDED", i, e)
			}
		}
		if throttledAt == 0 {
			t.Fatal("50 wrong passwords for one account from 50 addresses: none throttled; want M_LIMIT_EXCEEDED")
		}
		if e := tryAuth(t, srv, "127.0.2.1", "@alice:localhost", "pw"); e == nil || e.Code != "M_LIMIT_EXCEEDED" {
			t.Errorf("right password for the throttled account from a fresh address = %v; want M_LIMIT_EXCEEDED", e)
		}
		// The account's bucket is the one HTTP /login checks too.
		web := &http.Client{Transport: &http.Transport{DialContext: from("127.0.2.2").DialContext}}
		anon := srv.Client(t)
		anon.HTTP = web
		var body struct {
			ErrCode string `json:"errcode"`
		}
		login := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "pw"}
		if st := anon.Do("POST", "/_matrix/client/v3/login", login, &body); st != 429 || body.ErrCode != "M_LIMIT_EXCEEDED" {
			t.Errorf("HTTP /login of the throttled account = %d %s; want 429 M_LIMIT_EXCEEDED", st, body.ErrCode)
		}
		// And the password stage of user-interactive auth: 429, not a failed stage.
		if st := alice.Do("POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{"X"},
			"auth": map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "pw"}},
			&body); st != 429 || body.ErrCode != "M_LIMIT_EXCEEDED" {
			t.Errorf("UIA password stage of the throttled account = %d %s; want 429 M_LIMIT_EXCEEDED", st, body.ErrCode)
		}
		if e := tryAuth(t, srv, "127.0.2.3", "bob", "pw"); e != nil {
			t.Errorf("another account's right password = %v; want a session", e)
		}
	}, limited(2, 10))
}

// TestRevokedDeviceSessionClosesAtOnce: whatever ends a device's access token on
// HTTP (logout, logout/all, device deletion one by one or in bulk, a password change,
// deactivation) closes that device's native sessions with logged_out within a
// second, long before the heartbeat's token check; the user's other devices, and
// other users, stay connected.
func TestRevokedDeviceSessionClosesAtOnce(t *testing.T) {
	t.Parallel()
	password := func(user string) map[string]any {
		return map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": user}, "password": "pw"}
	}
	for _, tc := range []struct {
		name string
		// act revokes with the user's devices' HTTP clients by name: A and B, and
		// R (the device that registered).
		act    func(user string, dev map[string]*testserver.Client)
		closed []string
	}{
		{"logout", func(_ string, dev map[string]*testserver.Client) {
			dev["A"].MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, nil)
		}, []string{"A"}},
		{"logout all", func(_ string, dev map[string]*testserver.Client) {
			dev["R"].MustDo("POST", "/_matrix/client/v3/logout/all", map[string]any{}, nil)
		}, []string{"A", "B", "R"}},
		{"delete device", func(user string, dev map[string]*testserver.Client) {
			dev["R"].MustDo("DELETE", "/_matrix/client/v3/devices/"+dev["A"].Device, map[string]any{"auth": password(user)}, nil)
		}, []string{"A"}},
		{"delete devices", func(user string, dev map[string]*testserver.Client) {
			dev["R"].MustDo("POST", "/_matrix/client/v3/delete_devices",
				map[string]any{"devices": []string{dev["A"].Device, dev["B"].Device}, "auth": password(user)}, nil)
		}, []string{"A", "B"}},
		{"password change", func(user string, dev map[string]*testserver.Client) {
			dev["R"].MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "pw2", "auth": password(user)}, nil)
		}, []string{"A", "B"}},
		{"deactivate", func(user string, dev map[string]*testserver.Client) {
			dev["R"].MustDo("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"auth": password(user)}, nil)
		}, []string{"A", "B", "R"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
				ctx := context.Background()
				bystander := dial(t, srv, sdk.Options{Token: srv.Register(t, "carol", "pw").Token})
				r := srv.Register(t, "alice", "pw")
				dev := map[string]*testserver.Client{"R": r}
				for _, name := range []string{"A", "B"} {
					var s struct {
						AccessToken string `json:"access_token"`
						DeviceID    string `json:"device_id"`
					}
					srv.Client(t).MustDo("POST", "/_matrix/client/v3/login", map[string]any{
						"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"},
						"password": "pw", "device_id": "DEV" + name}, &s)
					dev[name] = r.WithToken(s.AccessToken)
					dev[name].Device = s.DeviceID
				}
				sessions := map[string]*sdk.Client{}
				for name, c := range dev {
					sessions[name] = dial(t, srv, sdk.Options{Token: c.Token})
				}

				tc.act("alice", dev)
				deadline := time.After(time.Second)
				for _, name := range tc.closed {
					select {
					case <-sessions[name].Done():
						if code := sessions[name].CloseCode(); code != native.CloseLoggedOut {
							t.Errorf("device %s: closed with %q; want %q", name, code, native.CloseLoggedOut)
						}
					case <-deadline:
						t.Fatalf("device %s: native session still open 1 s after %s", name, tc.name)
					}
				}
				// The sessions of devices not revoked, and of other users, go on.
				open := map[string]*sdk.Client{"carol": bystander}
				for name, c := range sessions {
					if !contains(tc.closed, name) {
						open[name] = c
					}
				}
				for name, c := range open {
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := c.Rooms(cctx)
					cancel()
					if err != nil {
						t.Errorf("device %s after %s: %v; want its session to go on", name, tc.name, err)
					}
				}
			})
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestRelogOnRevokedDeviceKeepsSession: a login that reuses a device ID revokes the
// device's old tokens; the session opened with the new token stays.
func TestRelogOnRevokedDeviceKeepsSession(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		r := srv.Register(t, "alice", "pw")
		old := dial(t, srv, sdk.Options{Token: r.Token})
		fresh := dial(t, srv, sdk.Options{User: "alice", Password: "pw", DeviceID: r.Device})
		select {
		case <-old.Done():
			if code := old.CloseCode(); code != native.CloseLoggedOut {
				t.Errorf("old session closed with %q; want %q", code, native.CloseLoggedOut)
			}
		case <-time.After(time.Second):
			t.Fatal("the session of the replaced token is still open after 1 s")
		}
		if _, err := fresh.Rooms(context.Background()); err != nil {
			t.Errorf("session of the new login: %v; want it to go on", err)
		}
	})
}

// TestOpFloodThrottled: a flood of any op is bounded: ops whose HTTP twins are
// rate-limited by the user's bucket, which HTTP shares; reads and heartbeats by
// a larger allowance; and requests before auth by the address's bucket.
func TestOpFloodThrottled(t *testing.T) {
	t.Parallel()
	const burst = 10
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice", "pw")
		var room struct {
			RoomID string `json:"room_id"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
		for _, tc := range []struct {
			name string
			op   string
			data any
			max  int // the most requests that may pass
		}{
			{"send", "send", native.Send{RoomID: room.RoomID, Body: "flood"}, burst},
			{"ping", "ping", struct{}{}, burst * native.ReadAllowance},
			{"history", "history", native.History{RoomID: room.RoomID, Limit: 1}, burst * native.ReadAllowance},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// A user of its own per op, so that each starts with a full bucket.
				u := srv.Register(t, "flood-"+tc.name, "pw")
				u.MustDo("POST", "/_matrix/client/v3/rooms/"+room.RoomID+"/join", map[string]any{}, nil)
				c := dial(t, srv, sdk.Options{Token: u.Token, Dialer: from("127.0.3.1")})
				passed := 0
				for ; passed <= 4*tc.max; passed++ {
					err := c.Call(ctx, tc.op, tc.data, nil)
					if err == nil {
						continue
					}
					var ne *native.Error
					if !errors.As(err, &ne) || ne.Code != "M_LIMIT_EXCEEDED" || ne.RetryAfterMs <= 0 {
						t.Fatalf("%s #%d: %v; want success or M_LIMIT_EXCEEDED with retry_after_ms", tc.op, passed+1, err)
					}
					break
				}
				// The bucket refills during the flood, by a few requests at most.
				if passed > tc.max+tc.max/2 {
					t.Fatalf("%d %s requests passed at once; want at most about %d", passed, tc.op, tc.max)
				}
				if tc.op == "send" {
					// The same bucket guards the HTTP twin.
					var body struct {
						ErrCode string `json:"errcode"`
					}
					if st := u.Do("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/t1",
						map[string]string{"msgtype": "m.text", "body": "x"}, &body); st != 429 || body.ErrCode != "M_LIMIT_EXCEEDED" {
						t.Errorf("HTTP send after the native flood = %d %s; want 429 M_LIMIT_EXCEEDED", st, body.ErrCode)
					}
				}
			})
		}

		t.Run("before auth", func(t *testing.T) {
			c := rawDialFrom(t, srv, "127.0.3.2")
			c.op("h", "hello", native.Hello{Version: native.ProtocolVersion})
			expect[native.HelloReply](c, "reply")
			for i := 1; ; i++ {
				c.op(fmt.Sprint(i), "ping", nil)
				env, body, err := c.read(5 * time.Second)
				if err != nil {
					t.Fatalf("ping %d before auth: %v", i, err)
				}
				if env.Op == "error" {
					var m native.Message[native.Error]
					native.Unmarshal(native.JSON, body, &m)
					if m.Data.Code != "M_LIMIT_EXCEEDED" {
						t.Fatalf("ping %d before auth: %v; want M_LIMIT_EXCEEDED", i, m.Data)
					}
					break
				}
				if i > 2*burst {
					t.Fatalf("%d pings before auth passed from one address; want at most about %d", i, burst)
				}
			}
		})
	}, limited(1, burst))
}

// rawDialFrom is rawDial from the loopback address ip.
func rawDialFrom(t *testing.T, srv *testserver.Server, ip string) *rawConn {
	t.Helper()
	conn, err := from(ip).Dial("tcp", strings.TrimPrefix(srv.NativeAddr, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}
