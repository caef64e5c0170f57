package federation_test

import (
	"context"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// TestErasedUsersEventsGoOutRedacted: once its sender deactivated with erase, an
// event is served redacted over federation, even to a server that was in the room
// when it was sent (it would show the event to its later joiners).
func TestErasedUsersEventsGoOutRedacted(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a, b, alice, _, room := joinedPair(t, d)
		carol := a.Register(t, "carol", "pw-c")
		carol.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		msg := send(t, carol, room, "m1", "body1")
		client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(b.Config.ServerName),
			KeyID: gomatrixserverlib.KeyID(b.Key.ID), PrivateKey: b.Key.PrivateKey}}, fclient.WithSkipVerify(true))
		body := func() string {
			t.Helper()
			res, err := client.GetEvent(context.Background(), spec.ServerName(b.Config.ServerName), spec.ServerName(a.Config.ServerName), msg)
			if err != nil || len(res.PDUs) != 1 {
				t.Fatalf("GET /event/%s = %v, %d PDUs", msg, err, len(res.PDUs))
			}
			return gjson.GetBytes(res.PDUs[0], "content.body").String()
		}
		if got := body(); got != "body1" {
			t.Fatalf("event before the erasure = %q; want body1", got)
		}
		carol.MustDo("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"erase": true, "auth": map[string]any{
			"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "carol"}, "password": "pw-c"}}, nil)
		if got := body(); got != "" {
			t.Errorf("event after the erasure has body %q; want it redacted", got)
		}
		// Alice, joined when it was sent, still reads it whole.
		var ev map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room+"/event/"+msg, nil, &ev)
		if c, _ := ev["content"].(map[string]any); c["body"] != "body1" {
			t.Errorf("alice's copy after the erasure = %v; want the body", ev["content"])
		}
	})
}
