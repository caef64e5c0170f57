package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"testing"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestMalformedEventsAreBadJSON: events that gomatrixserverlib parses but panics
// on later (an invalid room ID, signatures that are not an object; both found by
// FuzzTransaction and FuzzPDU) are refused as M_BAD_JSON, not answered 500.
func TestMalformedEventsAreBadJSON(t *testing.T) {
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		a.Register(t, "alice", "pw")
		invite := func(roomID string, signatures any) map[string]any {
			return map[string]any{
				"type": "m.room.member", "state_key": "@alice:" + a.Config.ServerName, "sender": "@mallory:" + b.Config.ServerName,
				"room_id": roomID, "content": map[string]any{"membership": "invite"}, "auth_events": []string{}, "prev_events": []string{},
				"depth": 1, "origin_server_ts": 1, "signatures": signatures,
			}
		}
		for _, tc := range []struct {
			name  string
			event map[string]any
		}{
			{"signatures a string", invite("!room:"+b.Config.ServerName, "")},
			{"room ID too short", invite("!:", map[string]any{})},
		} {
			raw, _ := json.Marshal(tc.event)
			ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromUntrustedJSON(raw)
			if err != nil {
				t.Fatalf("%s: the attack event does not even parse: %v", tc.name, err)
			}
			path := "/_matrix/federation/v2/invite/" + url.PathEscape(tc.event["room_id"].(string)) + "/" + url.PathEscape(ev.EventID())
			req := fclient.NewFederationRequest("PUT", spec.ServerName(b.Config.ServerName), spec.ServerName(a.Config.ServerName), path)
			if err := req.SetContent(map[string]any{"room_version": "10", "event": json.RawMessage(raw), "invite_room_state": []any{}}); err != nil {
				t.Fatal(err)
			}
			if err := req.Sign(spec.ServerName(b.Config.ServerName), gomatrixserverlib.KeyID(b.Key.ID), b.Key.PrivateKey); err != nil {
				t.Fatal(err)
			}
			hr, err := req.HTTPRequest()
			if err != nil {
				t.Fatal(err)
			}
			client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(b.Config.ServerName),
				KeyID: gomatrixserverlib.KeyID(b.Key.ID), PrivateKey: b.Key.PrivateKey}}, fclient.WithSkipVerify(true))
			err = client.DoRequestAndParseResponse(context.Background(), hr, &struct{}{})
			var httpErr gomatrix.HTTPError
			if !errors.As(err, &httpErr) || httpErr.Code != 400 {
				t.Errorf("invite with %s = %v; want 400 M_BAD_JSON", tc.name, err)
				continue
			}
			var body struct {
				Errcode string `json:"errcode"`
			}
			json.Unmarshal(httpErr.Contents, &body)
			if body.Errcode != "M_BAD_JSON" {
				t.Errorf("invite with %s = %d %s; want 400 M_BAD_JSON", tc.name, httpErr.Code, body.Errcode)
			}
		}
	})
}
