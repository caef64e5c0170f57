package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// signedRequest makes a request signed as server from to server to; body, if not
// nil, is sent as JSON.
func signedRequest(t *testing.T, from, to *testserver.Server, method, path string, body, out any) error {
	t.Helper()
	client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(from.Config.ServerName),
		KeyID: gomatrixserverlib.KeyID(from.Key.ID), PrivateKey: from.Key.PrivateKey}}, fclient.WithSkipVerify(true))
	return client.DoRequestAndParseResponse(context.Background(), signedHTTPRequest(t, from, to, method, path, body), out)
}

// signedHTTPRequest is the request signedRequest sends, for a test that reads the
// raw response.
func signedHTTPRequest(t *testing.T, from, to *testserver.Server, method, path string, body any) *http.Request {
	t.Helper()
	req := fclient.NewFederationRequest(method, spec.ServerName(from.Config.ServerName), spec.ServerName(to.Config.ServerName), path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := req.Sign(spec.ServerName(from.Config.ServerName), gomatrixserverlib.KeyID(from.Key.ID), from.Key.PrivateKey); err != nil {
		t.Fatal(err)
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	return hr
}

// errStatus is the HTTP status and errcode of a failed request ("" and 200 if it
// succeeded).
func errStatus(err error) (int, string) {
	var httpErr gomatrix.HTTPError
	if errors.As(err, &httpErr) {
		return httpErr.Code, gjson.GetBytes(httpErr.Contents, "errcode").String()
	}
	if err != nil {
		return -1, err.Error()
	}
	return 200, ""
}

// fedRead is one federation read of room events, made by server B.
type fedRead struct {
	name         string
	method, path string
	body         any
}

func eventReads(room, eventID string) []fedRead {
	r, e := url.PathEscape(room), url.PathEscape(eventID)
	return []fedRead{
		{"/event_auth", "GET", "/_matrix/federation/v1/event_auth/" + r + "/" + e, nil},
		{"/event", "GET", "/_matrix/federation/v1/event/" + e, nil},
		{"/state_ids", "GET", "/_matrix/federation/v1/state_ids/" + r + "?event_id=" + url.QueryEscape(eventID), nil},
		{"/state", "GET", "/_matrix/federation/v1/state/" + r + "?event_id=" + url.QueryEscape(eventID), nil},
		{"/backfill", "GET", "/_matrix/federation/v1/backfill/" + r + "?limit=50&v=" + url.QueryEscape(eventID), nil},
		{"/get_missing_events", "POST", "/_matrix/federation/v1/get_missing_events/" + r,
			map[string]any{"earliest_events": []string{}, "latest_events": []string{eventID}, "limit": 50}},
		{"/timestamp_to_event", "GET", fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=b", r, time.Now().Add(time.Hour).UnixMilli()), nil},
	}
}

// TestServerReadsRespectRoomsAndVisibility attacks A's federation read endpoints
// as server B: for a room B has nobody in, every one refuses with M_FORBIDDEN;
// naming a room B is in does not open another room's events; and in a room whose
// history is visible to joined members only, what was sent before B's user joined
// is hidden from B (/event, /timestamp_to_event) or comes redacted (/backfill,
// /get_missing_events), while what was sent after comes whole.
func TestServerReadsRespectRoomsAndVisibility(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		bob := b.Register(t, "bob", "pw")

		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		elsewhere := created["room_id"]
		otherSecret := send(t, alice, elsewhere, "e1", "in a room B is not in")

		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "initial_state": []map[string]any{{
			"type": "m.room.history_visibility", "state_key": "", "content": map[string]string{"history_visibility": "joined"}}}}, &created)
		room := created["room_id"]
		secret := send(t, alice, room, "s1", "before bob joined")
		time.Sleep(5 * time.Millisecond) // a timestamp strictly between the secret and the join
		between := time.Now().UnixMilli()
		time.Sleep(5 * time.Millisecond)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		waitFor(t, "A to see bob join", func() bool {
			var members struct {
				Joined map[string]any `json:"joined"`
			}
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &members)
			return members.Joined[bob.UserID] != nil
		})
		open := send(t, alice, room, "o1", "after bob joined")

		t.Run("not in the room", func(t *testing.T) {
			for _, r := range eventReads(elsewhere, otherSecret) {
				err := signedRequest(t, b, a, r.method, r.path, r.body, nil)
				if code, errcode := errStatus(err); code != 403 || errcode != "M_FORBIDDEN" {
					t.Errorf("%s of a room B is not in = %d %s; want 403 M_FORBIDDEN", r.name, code, errcode)
				}
			}
		})

		t.Run("naming another room", func(t *testing.T) {
			// B is in room and names it, but asks about the other room's event.
			for _, r := range eventReads(room, otherSecret) {
				if r.name == "/event" || r.name == "/timestamp_to_event" {
					continue // no room in the URL to name
				}
				var out json.RawMessage
				err := signedRequest(t, b, a, r.method, r.path, r.body, &out)
				code, errcode := errStatus(err)
				switch {
				case code == 403 || code == 404:
				case code == 200 && !bytes.Contains(out, []byte(elsewhere)) && !bytes.Contains(out, []byte("in a room B is not in")):
					// An answer about room only (an empty page) leaks nothing.
				default:
					t.Errorf("%s naming %s for an event of another room = %d %s %s; want 403/404 or nothing of that room", r.name, room, code, errcode, out)
				}
			}
		})

		t.Run("history visibility", func(t *testing.T) {
			var got struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			err := signedRequest(t, b, a, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(secret), nil, &got)
			if code, errcode := errStatus(err); code != 404 && code != 403 {
				t.Errorf("/event of a message sent before B joined = %d %s %s; want 403 or 404", code, errcode, got.PDUs)
			}
			if err := signedRequest(t, b, a, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(open), nil, &got); err != nil ||
				len(got.PDUs) != 1 || gjson.GetBytes(got.PDUs[0], "content.body").String() != "after bob joined" {
				t.Errorf("/event of a message sent after B joined = %s, %v; want it whole", got.PDUs, err)
			}

			var ts struct {
				EventID string `json:"event_id"`
			}
			path := fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=b", url.PathEscape(room), between)
			if err := signedRequest(t, b, a, "GET", path, nil, &ts); err == nil && ts.EventID == secret {
				t.Errorf("/timestamp_to_event before B joined = the hidden message %s", secret)
			}

			for _, r := range eventReads(room, open) {
				if r.name != "/backfill" && r.name != "/get_missing_events" {
					continue
				}
				var out json.RawMessage
				if err := signedRequest(t, b, a, r.method, r.path, r.body, &out); err != nil {
					t.Fatalf("%s: %v", r.name, err)
				}
				pdus := gjson.GetBytes(out, "pdus")
				if r.name == "/get_missing_events" {
					pdus = gjson.GetBytes(out, "events")
				}
				hidden := false
				for _, pdu := range pdus.Array() {
					if pdu.Get("content.body").String() == "before bob joined" {
						t.Errorf("%s gave B the message sent before its user joined: %s", r.name, pdu.Raw)
					}
					if pdu.Get("type").String() == "m.room.message" && !pdu.Get("content.body").Exists() {
						hidden = true // there, redacted: the DAG stays whole
					}
				}
				if !hidden {
					t.Errorf("%s = %s; want the earlier message redacted", r.name, out)
				}
			}
			var page struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			path = "/_matrix/federation/v1/backfill/" + url.PathEscape(room) + "?limit=50&v=" + url.QueryEscape(open)
			if err := signedRequest(t, b, a, "GET", path, nil, &page); err != nil || len(page.PDUs) == 0 ||
				gjson.GetBytes(page.PDUs[0], "content.body").String() != "after bob joined" {
				t.Errorf("/backfill from the later message starts with %v, %v; want that message whole", page.PDUs[:min(1, len(page.PDUs))], err)
			}
		})
	})
}
