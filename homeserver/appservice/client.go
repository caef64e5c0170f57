package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/users"
)

// maxAnswerBytes bounds what is read of a service's answer.
const maxAnswerBytes = 1 << 20

// call makes one request to service r's path (under /_matrix/app/v1) with the
// hs_token and returns the status and at most maxAnswerBytes of the body.
func (s *Service) call(ctx context.Context, r *Registration, method, path string, query url.Values, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(data)
	}
	u := r.URL + "/_matrix/app/v1" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.HSToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("application service %s: %s %s: %w", r.ID, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("application service %s: %s %s: read answer: %w", r.ID, method, path, err)
	}
	return resp.StatusCode, data, nil
}

// queryAgain is how long an unanswered or negative query is not repeated.
const queryAgain = 30 * time.Second

// mayQuery reports whether key may be queried now, and notes that it is.
func (s *Service) mayQuery(key string) bool {
	s.queriedMu.Lock()
	defer s.queriedMu.Unlock()
	if t, ok := s.queried[key]; ok && time.Since(t) < queryAgain {
		return false
	}
	if len(s.queried) > 10_000 {
		clear(s.queried)
	}
	s.queried[key] = time.Now()
	return true
}

// QueryUser asks the services whose user namespace holds userID whether it
// exists (GET /users/{userId}), which lets a service create the user on demand.
// It reports whether a service answered yes; the caller looks the user up again.
func (s *Service) QueryUser(ctx context.Context, userID string) bool {
	if s == nil {
		return false
	}
	for _, r := range s.regs {
		if r.URL == "" || !s.inUsers(r, userID) || !s.mayQuery("u"+r.ID+userID) {
			continue
		}
		status, _, err := s.call(ctx, r, http.MethodGet, "/users/"+url.PathEscape(userID), nil, nil)
		if err != nil {
			s.log.Info("application service user query failed", "appservice", r.ID, "err", err)
			continue
		}
		if status/100 == 2 {
			s.forgetQuery("u" + r.ID + userID)
			return true
		}
	}
	return false
}

// AskAboutUser asks the services about userID (QueryUser) when it is a local
// user with no account: before an invite, so a service can create the user the
// invite is for.
func (s *Service) AskAboutUser(ctx context.Context, userID string) {
	if s == nil {
		return
	}
	local, ok := s.deps.Users.LocalpartOf(userID)
	if !ok {
		return
	}
	if _, err := s.deps.Users.Account(ctx, local); errors.Is(err, users.ErrNotFound) {
		s.QueryUser(ctx, userID)
	}
}

// QueryAlias asks the services whose alias namespace holds alias whether it
// exists (GET /rooms/{alias}), which lets a service create the room on demand.
func (s *Service) QueryAlias(ctx context.Context, alias string) bool {
	if s == nil {
		return false
	}
	for _, r := range s.regs {
		if m, _ := matchAny(r.Aliases, alias); r.URL == "" || !m || !s.mayQuery("a"+r.ID+alias) {
			continue
		}
		status, _, err := s.call(ctx, r, http.MethodGet, "/rooms/"+url.PathEscape(alias), nil, nil)
		if err != nil {
			s.log.Info("application service alias query failed", "appservice", r.ID, "err", err)
			continue
		}
		if status/100 == 2 {
			s.forgetQuery("a" + r.ID + alias)
			return true
		}
	}
	return false
}

func (s *Service) forgetQuery(key string) {
	s.queriedMu.Lock()
	delete(s.queried, key)
	s.queriedMu.Unlock()
}

// Ping checks that service asID is reachable and accepts our hs_token (POST
// /_matrix/client/v1/appservice/{id}/ping): only the service itself, callerAS,
// may ask. It returns how long the service took.
func (s *Service) Ping(ctx context.Context, callerAS, asID, txnID string) (time.Duration, error) {
	r, ok := s.byID[asID]
	if !ok || callerAS != asID {
		return 0, mxerror.New(mxerror.Forbidden, "an application service may only ping itself")
	}
	if r.URL == "" {
		return 0, mxerror.New(mxerror.URLNotSet, "application service %s has no URL", asID)
	}
	body := map[string]any{}
	if txnID != "" {
		body["transaction_id"] = txnID
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	start := time.Now()
	status, answer, err := s.call(ctx, r, http.MethodPost, "/ping", nil, body)
	took := time.Since(start)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return 0, mxerror.New(mxerror.ConnectionTimeout, "application service did not answer in time")
	case err != nil:
		return 0, mxerror.New(mxerror.ConnectionFailed, "cannot reach the application service")
	case status/100 != 2:
		return 0, &mxerror.Error{Code: mxerror.BadStatus, Message: "application service answered with an error",
			Extra: map[string]any{"status": status, "body": string(answer)}}
	}
	return took, nil
}

// ThirdParty forwards a third-party lookup (GET /thirdparty/...) to the
// services that bridge protocol ("" for all of them, for the lookups by alias
// or user ID) and merges their lists. kind is "protocol", "location" or "user".
func (s *Service) ThirdParty(ctx context.Context, kind, protocol string, query url.Values) ([]json.RawMessage, bool) {
	if kind == "protocol" {
		s.queriedMu.Lock()
		c, ok := s.protocols[protocol]
		s.queriedMu.Unlock()
		if ok && time.Since(c.at) < protocolCacheFor {
			return []json.RawMessage{c.data}, true
		}
	}
	// The caller's own credentials and identity assertion are not the
	// service's business: only the lookup's fields go on.
	fields := url.Values{}
	for k, v := range query {
		if k != "access_token" && k != "user_id" && k != "device_id" {
			fields[k] = v
		}
	}
	known := false
	out := []json.RawMessage{}
	for _, r := range s.regs {
		if r.URL == "" || (protocol != "" && !contains(r.Protocols, protocol)) || (protocol == "" && len(r.Protocols) == 0) {
			continue
		}
		known = true
		path := "/thirdparty/" + kind
		if protocol != "" {
			path += "/" + url.PathEscape(protocol)
		}
		qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		status, answer, err := s.call(qctx, r, http.MethodGet, path, fields, nil)
		cancel()
		if err != nil || status/100 != 2 {
			continue
		}
		if kind == "protocol" {
			if len(out) == 0 {
				out = append(out, json.RawMessage(answer))
			} else {
				out[0] = mergeProtocol(out[0], answer)
			}
			continue
		}
		var list []json.RawMessage
		if json.Unmarshal(answer, &list) == nil {
			out = append(out, list...)
		}
	}
	if kind == "protocol" && len(out) > 0 {
		s.queriedMu.Lock()
		s.protocols[protocol] = cachedProtocol{data: out[0], at: time.Now()}
		s.queriedMu.Unlock()
	}
	return out, known
}

// protocolCacheFor is how long a protocol's metadata is kept: it describes the
// bridge, which changes with its configuration, not with every request.
const protocolCacheFor = 10 * time.Minute

type cachedProtocol struct {
	data json.RawMessage
	at   time.Time
}

// Protocols lists the protocols the services bridge.
func (s *Service) Protocols() []string {
	var out []string
	for _, r := range s.regs {
		for _, p := range r.Protocols {
			if !contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// mergeProtocol adds the instances of another service's answer for the same
// protocol to the first answer, as Synapse does: the fields come from the first.
func mergeProtocol(first, next []byte) json.RawMessage {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(first, &a) != nil || json.Unmarshal(next, &b) != nil {
		return first
	}
	var ia, ib []json.RawMessage
	_ = json.Unmarshal(a["instances"], &ia)
	_ = json.Unmarshal(b["instances"], &ib)
	merged, err := json.Marshal(append(ia, ib...))
	if err != nil {
		return first
	}
	a["instances"] = merged
	out, err := json.Marshal(a)
	if err != nil {
		return first
	}
	return out
}
