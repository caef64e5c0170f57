// Package loadgen drives a Matrix homeserver over the client–server API with load
// scenarios and measures it from outside: throughput, latency percentiles, and the
// server process's CPU time and memory. It speaks only the public API, so the same
// scenario runs against Hongyan, Dendrite or any other homeserver.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Client is one logged-in user.
type Client struct {
	Base   string
	HTTP   *http.Client
	Token  string
	UserID string
}

// NewHTTP returns a client with enough idle connections for a scenario's
// concurrency: the default of 2 per host would make the harness, not the server,
// the bottleneck.
func NewHTTP(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	return &http.Client{Transport: tr, Timeout: 5 * time.Minute}
}

// apiError is a non-200 answer.
type apiError struct {
	Status int
	Body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

// Do sends a JSON request and decodes a 200 answer into out.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &apiError{Status: resp.StatusCode, Body: string(data)}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Register creates a user through the dummy UIA stage, the way a client does on a
// server with open registration: a first request for the session, then the stage.
func Register(ctx context.Context, base string, hc *http.Client, localpart, password string) (*Client, error) {
	c := &Client{Base: base, HTTP: hc}
	body := map[string]any{"username": localpart, "password": password, "inhibit_login": false}
	var sess struct {
		Session string `json:"session"`
	}
	err := c.Do(ctx, http.MethodPost, "/_matrix/client/v3/register", body, nil)
	var ae *apiError
	if err == nil {
		return nil, fmt.Errorf("register %s: no UIA challenge", localpart)
	}
	if !asAPIError(err, &ae) || ae.Status != http.StatusUnauthorized {
		return nil, fmt.Errorf("register %s: %w", localpart, err)
	}
	_ = json.Unmarshal([]byte(ae.Body), &sess)
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": sess.Session}
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if err := c.Do(ctx, http.MethodPost, "/_matrix/client/v3/register", body, &out); err != nil {
		return nil, fmt.Errorf("register %s: %w", localpart, err)
	}
	c.Token, c.UserID = out.AccessToken, out.UserID
	return c, nil
}

func asAPIError(err error, target **apiError) bool {
	ae, ok := err.(*apiError)
	if ok {
		*target = ae
	}
	return ok
}

// CreateRoom creates a public room and returns its ID.
func (c *Client) CreateRoom(ctx context.Context, name string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	err := c.Do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": name}, &out)
	return out.RoomID, err
}

// Join joins a room by ID.
func (c *Client) Join(ctx context.Context, roomID string) error {
	return c.Do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, nil)
}

// Send sends a text message with the given transaction ID.
func (c *Client) Send(ctx context.Context, roomID, txn, body string) error {
	return c.Do(ctx, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+url.PathEscape(txn),
		map[string]string{"msgtype": "m.text", "body": body}, nil)
}

// SyncResponse is the part of /sync the scenarios read.
type SyncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Type    string         `json:"type"`
					Content map[string]any `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// Sync runs one /sync.
func (c *Client) Sync(ctx context.Context, since string, timeout time.Duration, filter string) (*SyncResponse, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", fmt.Sprint(timeout.Milliseconds()))
	if filter != "" {
		q.Set("filter", filter)
	}
	var out SyncResponse
	err := c.Do(ctx, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), nil, &out)
	return &out, err
}
