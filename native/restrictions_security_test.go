package native_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// registerAdmin makes a server admin through shared-secret registration.
func registerAdmin(t *testing.T, srv *testserver.Server, user string) *testserver.Client {
	t.Helper()
	c := srv.Client(t)
	var nonce map[string]string
	c.MustDo("GET", "/_synapse/admin/v1/register", nil, &nonce)
	mac := hmac.New(sha1.New, []byte("let-me-in"))
	mac.Write([]byte(strings.Join([]string{nonce["nonce"], user, "pw", "admin"}, "\x00")))
	var out map[string]any
	c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{
		"nonce": nonce["nonce"], "username": user, "password": "pw", "admin": true, "mac": hex.EncodeToString(mac.Sum(nil))}, &out)
	return c.WithToken(out["access_token"].(string))
}

// TestNativeLockedAndSuspended: the native protocol obeys an admin's lock and
// suspension like the client API: a lock closes the open session with
// account_locked and refuses a new one with M_USER_LOCKED; a suspension refuses
// sends with M_USER_SUSPENDED.
func TestNativeLockedAndSuspended(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		root := registerAdmin(t, srv, "root")
		bob := srv.Register(t, "bob", "pw")
		sess := dial(t, srv, sdk.Options{Token: bob.Token})
		room, err := sess.CreateRoom(ctx, native.CreateRoom{})
		if err != nil {
			t.Fatal(err)
		}

		root.MustDo("PUT", "/_matrix/client/v1/admin/suspend/"+url.PathEscape(bob.UserID), map[string]bool{"suspended": true}, nil)
		var ne *native.Error
		if _, err := sess.SendText(ctx, room, "x"); !errors.As(err, &ne) || ne.Code != "M_USER_SUSPENDED" {
			t.Errorf("suspended native send = %v; want M_USER_SUSPENDED", err)
		}
		root.MustDo("PUT", "/_matrix/client/v1/admin/suspend/"+url.PathEscape(bob.UserID), map[string]bool{"suspended": false}, nil)
		if _, err := sess.SendText(ctx, room, "y"); err != nil {
			t.Errorf("send after the suspension was lifted: %v", err)
		}

		root.MustDo("PUT", "/_matrix/client/v1/admin/lock/"+url.PathEscape(bob.UserID), map[string]bool{"locked": true}, nil)
		select {
		case <-sess.Done():
			if code := sess.CloseCode(); code != native.CloseLocked {
				t.Errorf("session closed with %q; want %q", code, native.CloseLocked)
			}
		case <-ctx.Done():
			t.Fatal("native session still open after the lock")
		}
		for _, opts := range []sdk.Options{{Token: bob.Token}, {User: "bob", Password: "pw"}} {
			c, err := sdk.Dial(ctx, sdk.Options{Addr: srv.NativeAddr, Token: opts.Token, User: opts.User, Password: opts.Password, NoReconnect: true})
			if err == nil {
				c.Close()
				t.Errorf("locked account opened a native session (%+v)", opts)
			} else if !errors.As(err, &ne) || ne.Code != "M_USER_LOCKED" {
				t.Errorf("locked native auth = %v; want M_USER_LOCKED", err)
			}
		}
		root.MustDo("PUT", "/_matrix/client/v1/admin/lock/"+url.PathEscape(bob.UserID), map[string]bool{"locked": false}, nil)
		again := dial(t, srv, sdk.Options{Token: bob.Token})
		if _, err := again.SendText(ctx, room, "z"); err != nil {
			t.Errorf("send after the lock was lifted: %v", err)
		}
	}, func(c *config.Config) { c.Registration.SharedSecret = "let-me-in" })
}
