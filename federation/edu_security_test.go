package federation_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestEDUsAboutStrangersLeaveNothing: device list, signing key and presence
// updates about another server's users that share no room with this server's are
// dropped, so a server naming a million users of its own leaves no rows behind.
func TestEDUsAboutStrangersLeaveNothing(t *testing.T) {
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		stranger := "@stranger:" + b.Config.ServerName
		edu := func(typ string, content any) gomatrixserverlib.EDU {
			raw, _ := json.Marshal(content)
			return gomatrixserverlib.EDU{Type: typ, Origin: b.Config.ServerName, Destination: a.Config.ServerName, Content: raw}
		}
		client := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: spec.ServerName(b.Config.ServerName),
			KeyID: gomatrixserverlib.KeyID(b.Key.ID), PrivateKey: b.Key.PrivateKey}}, fclient.WithSkipVerify(true))
		_, err := client.SendTransaction(context.Background(), gomatrixserverlib.Transaction{
			TransactionID:  "strangers",
			Origin:         spec.ServerName(b.Config.ServerName),
			Destination:    spec.ServerName(a.Config.ServerName),
			OriginServerTS: spec.AsTimestamp(time.Now()),
			PDUs:           []json.RawMessage{},
			EDUs: []gomatrixserverlib.EDU{
				edu(spec.MDeviceListUpdate, map[string]any{"user_id": stranger, "device_id": "D", "stream_id": 1, "prev_id": []int{}}),
				edu("m.signing_key_update", map[string]any{"user_id": stranger}),
				edu(spec.MPresence, map[string]any{"push": []any{map[string]any{"user_id": stranger, "presence": "online", "last_active_ago": 1}}}),
			},
		})
		if err != nil {
			t.Fatalf("send transaction: %v", err)
		}
		for _, table := range []string{"remote_device_lists", "device_list_changes", "presence"} {
			var n int
			if err := a.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM `+table+` WHERE user_id = $1`, stranger).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("rows of %s in %s after EDUs about them = %d; want 0", stranger, table, n)
			}
		}
	})
}
