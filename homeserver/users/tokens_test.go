package users

import (
	"context"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// authCode is the errcode Authenticate gives token ("" when it is valid) and whether
// the error asks for a soft logout.
func authCode(t *testing.T, s *Service, token string) (mxerror.Code, bool) {
	t.Helper()
	_, err := s.Authenticate(context.Background(), token, "127.0.0.1")
	if err == nil {
		return "", false
	}
	e, ok := mxerror.As(err)
	if !ok {
		t.Fatalf("Authenticate: %v; want a Matrix error", err)
	}
	return e.Code, e.SoftLogout
}

// TestAccessTokenLifecycle: tokens resolve to their user and device until the
// device logs out, is replaced by a login naming it, loses its session to a password
// change, or the account is deactivated; other devices are untouched by all but the
// last.
func TestAccessTokenLifecycle(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, Config{})
		reg := register(t, s, "alice", "pw1")
		c, err := s.Authenticate(ctx, reg.AccessToken, "127.0.0.1")
		if err != nil || c.UserID != "@alice:users.test" || c.Localpart != "alice" || c.DeviceID != reg.DeviceID {
			t.Fatalf("Authenticate(registration token) = %+v, %v; want alice on device %s", c, err, reg.DeviceID)
		}
		if code, soft := authCode(t, s, "hya_not-a-token"); code != mxerror.UnknownToken || soft {
			t.Errorf("unknown token: %q soft %v; want M_UNKNOWN_TOKEN without soft_logout", code, soft)
		}

		login := func(device string) Session {
			t.Helper()
			sess, err := s.LoginPassword(ctx, "alice", "pw1", LoginOptions{DeviceID: device})
			if err != nil {
				t.Fatalf("LoginPassword(device %q): %v", device, err)
			}
			return sess
		}
		phone, laptop, tablet := login("PHONE"), login("LAPTOP"), login("TABLET")
		if _, err := s.LoginPassword(ctx, "alice", "wrong", LoginOptions{}); !mxerror.Is(err, mxerror.Forbidden) {
			t.Errorf("LoginPassword(wrong password) = %v; want M_FORBIDDEN", err)
		}

		// A login naming an existing device replaces that device's token.
		phone2 := login("PHONE")
		if code, _ := authCode(t, s, phone.AccessToken); code != mxerror.UnknownToken {
			t.Errorf("token of a device logged in again: %q; want M_UNKNOWN_TOKEN", code)
		}
		if code, _ := authCode(t, s, phone2.AccessToken); code != "" {
			t.Errorf("new token of the device: %q; want valid", code)
		}

		// Logout ends that device only.
		lc, err := s.Authenticate(ctx, laptop.AccessToken, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Logout(ctx, lc); err != nil {
			t.Fatal(err)
		}
		for tok, want := range map[string]mxerror.Code{laptop.AccessToken: mxerror.UnknownToken, tablet.AccessToken: "", phone2.AccessToken: ""} {
			if code, _ := authCode(t, s, tok); code != want {
				t.Errorf("after logout of LAPTOP, token of %s: %q; want %q", map[string]string{laptop.AccessToken: "LAPTOP", tablet.AccessToken: "TABLET", phone2.AccessToken: "PHONE"}[tok], code, want)
			}
		}
		if _, err := s.Device(ctx, "alice", "LAPTOP"); err == nil {
			t.Errorf("Device(LAPTOP) after logout exists; want gone")
		}

		// A password change that logs out other devices keeps the caller's.
		if err := s.ChangePassword(ctx, "alice", "pw2", true, "TABLET"); err != nil {
			t.Fatal(err)
		}
		if code, _ := authCode(t, s, phone2.AccessToken); code != mxerror.UnknownToken {
			t.Errorf("other device after password change: %q; want M_UNKNOWN_TOKEN", code)
		}
		if code, _ := authCode(t, s, tablet.AccessToken); code != "" {
			t.Errorf("kept device after password change: %q; want valid", code)
		}
		if err := s.CheckPassword(ctx, "alice", "pw1"); !mxerror.Is(err, mxerror.Forbidden) {
			t.Errorf("old password after change: %v; want M_FORBIDDEN", err)
		}
		if err := s.CheckPassword(ctx, "alice", "pw2"); err != nil {
			t.Errorf("new password: %v", err)
		}

		// LogoutAll ends every session; deactivation ends them and logins for good.
		bob := register(t, s, "bob", "pwb")
		if err := s.LogoutAll(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if code, _ := authCode(t, s, tablet.AccessToken); code != mxerror.UnknownToken {
			t.Errorf("after LogoutAll: %q; want M_UNKNOWN_TOKEN", code)
		}
		if code, _ := authCode(t, s, bob.AccessToken); code != "" {
			t.Errorf("another user's token after alice's LogoutAll: %q; want valid", code)
		}
		if err := s.Deactivate(ctx, "bob", false); err != nil {
			t.Fatal(err)
		}
		if code, _ := authCode(t, s, bob.AccessToken); code != mxerror.UnknownToken {
			t.Errorf("token of a deactivated account: %q; want M_UNKNOWN_TOKEN", code)
		}
		if err := s.CheckPassword(ctx, "bob", "pwb"); !mxerror.Is(err, mxerror.UserDeactivated) {
			t.Errorf("CheckPassword(deactivated) = %v; want M_USER_DEACTIVATED", err)
		}
		if _, err := s.Register(ctx, NewAccount{Localpart: "bob", Password: "x"}, LoginOptions{}, true); !mxerror.Is(err, mxerror.UserInUse) {
			t.Errorf("Register(deactivated localpart) = %v; want M_USER_IN_USE", err)
		}
	})
}

// TestRefreshTokens: an access token issued with a refresh token expires into a
// soft logout; refreshing rotates both tokens and the old pair stops working.
func TestRefreshTokens(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// Two services on one database: one issues tokens that expire at once, the
		// other an hour's worth, so expiry is observed without waiting on a clock.
		short := newTestService(t, db, Config{AccessTokenLifetime: time.Millisecond})
		long := newTestService(t, db, Config{})
		register(t, long, "alice", "pw")

		sess, err := long.LoginPassword(ctx, "alice", "pw", LoginOptions{WithRefreshToken: true})
		if err != nil {
			t.Fatal(err)
		}
		if sess.RefreshToken == "" || sess.ExpiresInMs != time.Hour.Milliseconds() {
			t.Fatalf("login with refresh: refresh %q, expires_in_ms %d; want a refresh token and %d", sess.RefreshToken, sess.ExpiresInMs, time.Hour.Milliseconds())
		}
		plain, err := long.LoginPassword(ctx, "alice", "pw", LoginOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if plain.RefreshToken != "" || plain.ExpiresInMs != 0 {
			t.Errorf("login without refresh: %+v; want no refresh token and no expiry", plain)
		}

		next, err := long.Refresh(ctx, sess.RefreshToken)
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if next.AccessToken == sess.AccessToken || next.RefreshToken == sess.RefreshToken || next.DeviceID != sess.DeviceID {
			t.Errorf("Refresh = %+v; want new tokens for device %s", next, sess.DeviceID)
		}
		if code, _ := authCode(t, long, sess.AccessToken); code != mxerror.UnknownToken {
			t.Errorf("access token after refresh: %q; want M_UNKNOWN_TOKEN", code)
		}
		if _, err := long.Refresh(ctx, sess.RefreshToken); !mxerror.Is(err, mxerror.UnknownToken) {
			t.Errorf("Refresh(used refresh token) = %v; want M_UNKNOWN_TOKEN", err)
		}
		if _, err := long.Refresh(ctx, plain.AccessToken); !mxerror.Is(err, mxerror.UnknownToken) {
			t.Errorf("Refresh(an access token) = %v; want M_UNKNOWN_TOKEN", err)
		}
		if code, _ := authCode(t, long, next.AccessToken); code != "" {
			t.Errorf("refreshed access token: %q; want valid", code)
		}

		expiring, err := short.LoginPassword(ctx, "alice", "pw", LoginOptions{WithRefreshToken: true})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, soft := authCode(t, short, expiring.AccessToken)
			if code == mxerror.UnknownToken && soft {
				break
			}
			if code != "" || time.Now().After(deadline) {
				t.Fatalf("expiring token: %q soft %v; want valid, then M_UNKNOWN_TOKEN with soft_logout", code, soft)
			}
			time.Sleep(time.Millisecond)
		}
		renewed, err := long.Refresh(ctx, expiring.RefreshToken)
		if err != nil {
			t.Fatalf("Refresh(after expiry): %v", err)
		}
		if code, _ := authCode(t, long, renewed.AccessToken); code != "" {
			t.Errorf("token refreshed after expiry: %q; want valid", code)
		}
		// The token without a refresh token never expired.
		if code, _ := authCode(t, long, plain.AccessToken); code != "" {
			t.Errorf("non-expiring token: %q; want valid", code)
		}
	})
}

// TestLoginToken: an m.login.token logs in once.
func TestLoginToken(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, Config{})
		register(t, s, "alice", "pw")
		tok, _, err := s.CreateLoginToken(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		sess, err := s.LoginWithToken(ctx, tok, LoginOptions{})
		if err != nil || sess.UserID != "@alice:users.test" {
			t.Fatalf("LoginWithToken = %+v, %v; want alice", sess, err)
		}
		if _, err := s.LoginWithToken(ctx, tok, LoginOptions{}); !mxerror.Is(err, mxerror.Forbidden) {
			t.Errorf("LoginWithToken(used) = %v; want M_FORBIDDEN", err)
		}
		if _, err := s.LoginWithToken(ctx, "hyl_forged", LoginOptions{}); !mxerror.Is(err, mxerror.Forbidden) {
			t.Errorf("LoginWithToken(unknown) = %v; want M_FORBIDDEN", err)
		}
	})
}
