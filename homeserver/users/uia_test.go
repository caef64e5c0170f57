package users

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// fastHasher keeps password hashing cheap in tests; the rules do not depend on cost.
var fastHasher = Hasher{MemoryKiB: 64, Time: 1}

func newTestService(t *testing.T, db *storage.DB, cfg Config) *Service {
	t.Helper()
	cfg.ServerName = "users.test"
	cfg.Hasher = fastHasher
	return New(db, cfg)
}

// register creates an account with a password and returns its first session.
func register(t *testing.T, s *Service, localpart, password string) Session {
	t.Helper()
	sess, err := s.Register(context.Background(), NewAccount{Localpart: localpart, Password: password}, LoginOptions{}, false)
	if err != nil {
		t.Fatalf("Register(%q): %v", localpart, err)
	}
	return sess
}

// uiaResult classifies what one Interactive step returned.
type uiaResult struct {
	done      bool         // Completed
	challenge bool         // a *Challenge
	errcode   mxerror.Code // the challenge's errcode, or a plain Matrix error's
	completed []string     // the challenge's completed stages
	session   string       // the challenge's session
	regToken  string       // Completed.RegistrationToken
}

func step(t *testing.T, s *Service, op Interactive, auth any) uiaResult {
	t.Helper()
	var raw json.RawMessage
	if auth != nil {
		if r, ok := auth.(string); ok {
			raw = json.RawMessage(r)
		} else {
			raw, _ = json.Marshal(auth)
		}
	}
	c, err := s.Interactive(context.Background(), op, raw)
	if err == nil {
		return uiaResult{done: true, regToken: c.RegistrationToken}
	}
	var ch *Challenge
	if errors.As(err, &ch) {
		return uiaResult{challenge: true, errcode: ch.ErrCode, completed: ch.Completed, session: ch.Session}
	}
	if e, ok := mxerror.As(err); ok {
		return uiaResult{errcode: e.Code}
	}
	t.Fatalf("Interactive(%s, %s): unexpected error %v", op.Purpose, raw, err)
	return uiaResult{}
}

// TestInteractiveAuth runs user-interactive auth sessions through their stages:
// what starts a session, what completes a stage, what fails one without ending the
// session, and what may not reuse a session.
func TestInteractiveAuth(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, Config{})
		register(t, s, "alice", "alice-password")
		register(t, s, "bob", "bob-password")
		password := []Flow{{Stages: []string{StagePassword}}}
		deleteAlice := Interactive{Purpose: "delete_devices", Localpart: "alice", Flows: password}
		pw := func(session, user, pass string) map[string]any {
			return map[string]any{"type": StagePassword, "session": session, "password": pass,
				"identifier": map[string]string{"type": "m.id.user", "user": user}}
		}

		// Without auth: a challenge naming a new session, nothing completed.
		first := step(t, s, deleteAlice, nil)
		if !first.challenge || first.session == "" || first.errcode != "" || len(first.completed) != 0 {
			t.Fatalf("Interactive(no auth) = %+v; want a fresh challenge", first)
		}
		sess := first.session

		for _, tc := range []struct {
			name string
			op   Interactive
			auth any
			want uiaResult // session and completed are not compared
		}{
			{"wrong password", deleteAlice, pw(sess, "alice", "guess"), uiaResult{challenge: true, errcode: mxerror.Forbidden}},
			// No password can make a stage for someone else succeed: refused (403),
			// not challenged again (as Synapse; Sytest checks it).
			{"another user's right password", deleteAlice, pw(sess, "bob", "bob-password"), uiaResult{challenge: false, errcode: mxerror.Forbidden}},
			{"full user ID of another server", deleteAlice, pw(sess, "@alice:elsewhere.test", "alice-password"), uiaResult{challenge: true, errcode: mxerror.Forbidden}},
			{"identifier type not supported", deleteAlice, map[string]any{"type": StagePassword, "session": sess, "password": "alice-password",
				"identifier": map[string]string{"type": "m.id.thirdparty"}}, uiaResult{challenge: true, errcode: mxerror.Unknown}},
			{"stage not offered", deleteAlice, map[string]any{"type": StageDummy, "session": sess}, uiaResult{challenge: true, errcode: mxerror.Unrecognized}},
			{"session of another operation", Interactive{Purpose: "change_password", Localpart: "alice", Flows: password},
				pw(sess, "alice", "alice-password"), uiaResult{errcode: mxerror.Forbidden}},
			{"session of another user", Interactive{Purpose: "delete_devices", Localpart: "bob", Flows: password},
				pw(sess, "bob", "bob-password"), uiaResult{errcode: mxerror.Forbidden}},
			{"unknown session", deleteAlice, pw("no-such-session", "alice", "alice-password"), uiaResult{errcode: mxerror.Unknown}},
			{"neither type nor session", deleteAlice, map[string]any{"password": "alice-password"}, uiaResult{errcode: mxerror.MissingParam}},
			{"auth not an object", deleteAlice, `["m.login.password"]`, uiaResult{errcode: mxerror.BadJSON}},
			// After all those failures the session still completes with the right proof.
			{"right password", deleteAlice, pw(sess, "alice", "alice-password"), uiaResult{done: true}},
			{"spent session", deleteAlice, pw(sess, "alice", "alice-password"), uiaResult{errcode: mxerror.Unknown}},
			{"full user ID, no session", deleteAlice, pw("", "@alice:users.test", "alice-password"), uiaResult{done: true}},
			{"deprecated user field", deleteAlice, map[string]any{"type": StagePassword, "user": "alice", "password": "alice-password"}, uiaResult{done: true}},
			{"dummy flow without session", Interactive{Purpose: "register", Flows: []Flow{{Stages: []string{StageDummy}}}},
				map[string]any{"type": StageDummy}, uiaResult{done: true}},
		} {
			got := step(t, s, tc.op, tc.auth)
			if got.done != tc.want.done || got.challenge != tc.want.challenge || got.errcode != tc.want.errcode {
				t.Errorf("%s: Interactive = %+v; want done %v, challenge %v, errcode %q", tc.name, got, tc.want.done, tc.want.challenge, tc.want.errcode)
			}
			if got.challenge && got.session != sess && tc.auth != nil {
				t.Errorf("%s: challenge names session %q; want the request's %q", tc.name, got.session, sess)
			}
			if got.challenge && len(got.completed) != 0 {
				t.Errorf("%s: failed stage recorded as completed: %v", tc.name, got.completed)
			}
		}
		if err := s.CheckPassword(ctx, "alice", "alice-password"); err != nil {
			t.Errorf("CheckPassword after the UIA runs: %v", err)
		}
	})
}

// TestInteractiveAuthRegistrationToken: a two-stage flow records its first stage in
// the session, counts the token as pending once validated, hands the token to the
// registration that completes, and refuses a token without uses left.
func TestInteractiveAuthRegistrationToken(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db, Config{RegistrationOpen: true, RequireRegistrationToken: true})
		one := int64(1)
		tok, err := s.CreateRegistrationToken(ctx, RegistrationToken{Token: "once", UsesAllowed: &one})
		if err != nil {
			t.Fatal(err)
		}
		op := Interactive{Purpose: "register", Flows: []Flow{{Stages: []string{StageRegistrationToken, StageDummy}}}}

		start := step(t, s, op, nil)
		if !start.challenge {
			t.Fatalf("start = %+v; want a challenge", start)
		}
		bad := step(t, s, op, map[string]any{"type": StageRegistrationToken, "session": start.session, "token": "nope"})
		if !bad.challenge || bad.errcode != mxerror.Unauthorized || len(bad.completed) != 0 {
			t.Errorf("unknown token: %+v; want a challenge with M_UNAUTHORIZED, nothing completed", bad)
		}
		missing := step(t, s, op, map[string]any{"type": StageRegistrationToken, "session": start.session})
		if !missing.challenge || missing.errcode != mxerror.MissingParam {
			t.Errorf("no token: %+v; want a challenge with M_MISSING_PARAM", missing)
		}
		good := step(t, s, op, map[string]any{"type": StageRegistrationToken, "session": start.session, "token": tok.Token})
		if !good.challenge || good.errcode != "" || !slices.Equal(good.completed, []string{StageRegistrationToken}) {
			t.Fatalf("valid token: %+v; want a challenge with %s completed", good, StageRegistrationToken)
		}
		if got, _ := s.GetRegistrationToken(ctx, tok.Token); got.Pending != 1 {
			t.Errorf("token after validation: pending %d; want 1", got.Pending)
		}
		// The one use is now pending: a second registration cannot validate it too.
		other := step(t, s, op, map[string]any{"type": StageRegistrationToken, "token": tok.Token})
		if !other.challenge || other.errcode != mxerror.Unauthorized {
			t.Errorf("second session with a one-use token: %+v; want M_UNAUTHORIZED", other)
		}
		if valid, err := s.RegistrationTokenValid(ctx, tok.Token); err != nil || valid {
			t.Errorf("RegistrationTokenValid with its only use pending = %v, %v; want false", valid, err)
		}
		done := step(t, s, op, map[string]any{"type": StageDummy, "session": start.session})
		if !done.done || done.regToken != tok.Token {
			t.Fatalf("dummy after token: %+v; want completed with registration token %q", done, tok.Token)
		}
		if _, err := s.Register(ctx, NewAccount{Localpart: "carol", Password: "pw", RegistrationToken: done.regToken}, LoginOptions{}, true); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetRegistrationToken(ctx, tok.Token)
		if err != nil || got.Pending != 0 || got.Completed != 1 {
			t.Errorf("token after registration = %+v, %v; want pending 0, completed 1", got, err)
		}
	})
}
