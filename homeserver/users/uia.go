package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// The user-interactive auth stages Hongyan offers.
const (
	StageDummy             = "m.login.dummy"
	StagePassword          = "m.login.password"
	StageRegistrationToken = "m.login.registration_token"
)

// Flow is one sequence of stages that completes a user-interactive auth.
type Flow struct {
	Stages []string `json:"stages"`
}

// Interactive describes one operation guarded by user-interactive auth.
type Interactive struct {
	// Purpose names the operation ("register", "delete_devices", ...). A session
	// started for one purpose cannot complete another.
	Purpose string
	// Localpart is the user the operation acts for; empty for registration. Password
	// stages must prove this user.
	Localpart string
	// Flows are the accepted stage sequences.
	Flows []Flow
	// Target names what the operation acts on (the device to delete, ...). A
	// session is bound to the target of its first step: a later step naming
	// another is refused (403), so a session started to delete one device cannot
	// be completed to delete another.
	Target string
	// Params are the request's own parameters (JSON), remembered by the session:
	// a step that carries them replaces what was kept, and Completed returns the
	// latest. Registration uses this so that a client may send its parameters
	// once and then only the auth dict.
	Params json.RawMessage
	// Keep leaves a finished session in place (until it expires) instead of
	// spending it, so that repeating the finished request finds its Result.
	Keep bool
}

// Challenge is the 401 answer that tells a client which stages remain. It is an error
// so that handlers can return it; the edge renders it with its own status and body.
type Challenge struct {
	Flows     []Flow         `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed"`
	ErrCode   mxerror.Code   `json:"errcode,omitempty"`
	ErrMsg    string         `json:"error,omitempty"`
}

func (c *Challenge) Error() string {
	if c.ErrCode != "" {
		return "user-interactive auth: " + string(c.ErrCode) + ": " + c.ErrMsg
	}
	return "user-interactive auth required"
}

// HTTPStatus is always 401, as the spec says for every UIA step.
func (c *Challenge) HTTPStatus() int { return http.StatusUnauthorized }

// AuthDict is the "auth" object of a request.
type AuthDict struct {
	Type       string      `json:"type"`
	Session    string      `json:"session"`
	Password   string      `json:"password"`
	Identifier *Identifier `json:"identifier"`
	// User is the deprecated top-level user field of m.login.password.
	User  string `json:"user"`
	Token string `json:"token"`
}

// Identifier is the identifier object of logins and password stages.
type Identifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// Completed is what a finished user-interactive auth proved.
type Completed struct {
	// RegistrationToken is the token the registration used, if any.
	RegistrationToken string
	// Session is the session's ID.
	Session string
	// Params are the request parameters the session holds (see Interactive.Params).
	Params json.RawMessage
	// Result is what an earlier completion of the same session recorded with
	// SetUIAResult ("" if nothing).
	Result string
}

// errOtherUser is a password stage that names someone other than the user the
// operation acts for. It is refused outright (403), not answered with a new
// challenge: no password can make it succeed.
var errOtherUser = errors.New("the password stage must prove the requesting user")

// Authenticate runs one step of user-interactive auth for op. It returns Completed
// when a flow is complete, and otherwise a *Challenge (or a Matrix error for a
// malformed request). raw is the request's "auth" value, nil when absent.
func (s *Service) Interactive(ctx context.Context, op Interactive, raw json.RawMessage) (Completed, error) {
	if len(raw) == 0 || string(raw) == "null" {
		id, err := s.newUIASession(ctx, op)
		if err != nil {
			return Completed{}, err
		}
		return Completed{}, s.challenge(op, id, nil)
	}
	var auth AuthDict
	if err := json.Unmarshal(raw, &auth); err != nil {
		return Completed{}, mxerror.New(mxerror.BadJSON, "auth must be an object: %v", err)
	}
	var done []string
	var regToken, params, result string
	if auth.Session == "" {
		if auth.Type == "" {
			return Completed{}, mxerror.New(mxerror.MissingParam, "auth needs a type or a session")
		}
		id, err := s.newUIASession(ctx, op)
		if err != nil {
			return Completed{}, err
		}
		auth.Session = id
	} else {
		var purpose, localpart, target, completed string
		err := s.db.QueryRow(ctx, `SELECT purpose, localpart, target, completed, registration_token, params, result FROM uia_sessions WHERE session_id = $1`,
			auth.Session).Scan(&purpose, &localpart, &target, &completed, &regToken, &params, &result)
		if errors.Is(err, sql.ErrNoRows) {
			return Completed{}, mxerror.New(mxerror.Unknown, "unknown user-interactive auth session")
		}
		if err != nil {
			return Completed{}, fmt.Errorf("read uia session: %w", err)
		}
		if purpose != op.Purpose || localpart != op.Localpart || target != op.Target {
			return Completed{}, mxerror.New(mxerror.Forbidden, "this auth session was started for another operation")
		}
		if err := json.Unmarshal([]byte(completed), &done); err != nil {
			return Completed{}, fmt.Errorf("read uia session: %w", err)
		}
		if len(op.Params) > 0 && string(op.Params) != params {
			if _, err := s.db.Exec(ctx, `UPDATE uia_sessions SET params = $1 WHERE session_id = $2`, string(op.Params), auth.Session); err != nil {
				return Completed{}, fmt.Errorf("record uia params: %w", err)
			}
		}
	}
	if len(op.Params) > 0 {
		params = string(op.Params)
	}

	if auth.Type != "" && !slices.Contains(done, auth.Type) {
		if !offers(op.Flows, auth.Type) {
			return Completed{}, s.failedChallenge(op, auth.Session, done, mxerror.Unrecognized, "auth type "+auth.Type+" is not offered here")
		}
		if err := s.runStage(ctx, op, auth); errors.Is(err, errOtherUser) {
			return Completed{}, mxerror.New(mxerror.Forbidden, "%v", err)
		} else if err != nil {
			// A throttled stage is answered as 429 with its retry_after_ms, not as a
			// failed stage the client would retry at once.
			if e, ok := mxerror.As(err); ok && e.Code != mxerror.LimitExceeded {
				return Completed{}, s.failedChallenge(op, auth.Session, done, e.Code, e.Message)
			}
			return Completed{}, err
		}
		done = append(done, auth.Type)
		if auth.Type == StageRegistrationToken {
			regToken = auth.Token
		}
		enc, _ := json.Marshal(done)
		if _, err := s.db.Exec(ctx, `UPDATE uia_sessions SET completed = $1, registration_token = $2 WHERE session_id = $3`,
			string(enc), regToken, auth.Session); err != nil {
			return Completed{}, fmt.Errorf("record uia stage: %w", err)
		}
	}

	for _, f := range op.Flows {
		if containsAll(done, f.Stages) {
			// A finished session is spent: it cannot authorise a second operation.
			// A kept one answers only for its own, bound by Purpose and Target.
			if !op.Keep {
				if _, err := s.db.Exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, auth.Session); err != nil {
					return Completed{}, fmt.Errorf("end uia session: %w", err)
				}
			}
			return Completed{RegistrationToken: regToken, Session: auth.Session, Params: json.RawMessage(params), Result: result}, nil
		}
	}
	return Completed{}, s.challenge(op, auth.Session, done)
}

func (s *Service) runStage(ctx context.Context, op Interactive, auth AuthDict) error {
	switch auth.Type {
	case StageDummy:
		return nil
	case StagePassword:
		user := auth.User
		if auth.Identifier != nil {
			if auth.Identifier.Type != "m.id.user" {
				return mxerror.New(mxerror.Unknown, "only m.id.user identifiers are supported")
			}
			user = auth.Identifier.User
		}
		local, err := s.resolveLocalpart(user)
		if err != nil {
			return err
		}
		if local != op.Localpart {
			return errOtherUser
		}
		return s.CheckPassword(ctx, local, auth.Password)
	case StageRegistrationToken:
		if auth.Token == "" {
			return mxerror.New(mxerror.MissingParam, "token is required")
		}
		return s.reserveRegistrationToken(ctx, auth.Token)
	}
	return mxerror.New(mxerror.Unrecognized, "unknown auth type %s", auth.Type)
}

func (s *Service) newUIASession(ctx context.Context, op Interactive) (string, error) {
	id := randomToken(18)
	// Sessions abandoned half-way are swept here, on the path that makes new ones.
	if _, err := s.db.Exec(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1`, now()-3600_000); err != nil {
		return "", fmt.Errorf("sweep uia sessions: %w", err)
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO uia_sessions (session_id, purpose, localpart, target, params, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, op.Purpose, op.Localpart, op.Target, string(op.Params), now()); err != nil {
		return "", fmt.Errorf("create uia session: %w", err)
	}
	return id, nil
}

func (s *Service) challenge(op Interactive, session string, done []string) *Challenge {
	if done == nil {
		done = []string{}
	}
	return &Challenge{Flows: op.Flows, Params: map[string]any{}, Session: session, Completed: done}
}

// setUIAResult records what a kept session's operation produced.
func (s *Service) setUIAResult(ctx context.Context, session, result string) error {
	if _, err := s.db.Exec(ctx, `UPDATE uia_sessions SET result = $1 WHERE session_id = $2`, result, session); err != nil {
		return fmt.Errorf("record uia result: %w", err)
	}
	return nil
}

// uiaSession reads the parameters and result a session holds for purpose; ok is
// false when there is no such session (the caller then starts afresh).
func (s *Service) uiaSession(ctx context.Context, session, purpose string) (params, result string, ok bool, err error) {
	var p string
	err = s.db.QueryRow(ctx, `SELECT purpose, params, result FROM uia_sessions WHERE session_id = $1`, session).Scan(&p, &params, &result)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && p != purpose) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("read uia session: %w", err)
	}
	return params, result, true, nil
}

func (s *Service) failedChallenge(op Interactive, session string, done []string, code mxerror.Code, msg string) *Challenge {
	c := s.challenge(op, session, done)
	c.ErrCode, c.ErrMsg = code, msg
	return c
}

func offers(flows []Flow, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f.Stages, stage) {
			return true
		}
	}
	return false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
