//go:build goolm

package federation_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/homeserver/testserver/cryptoclient"
)

// TestEncryptedAcrossServers: alice on A and bob on B share an encrypted room and
// each decrypts the other's message. Every step of Olm/Megolm crosses federation:
// key queries (/user/keys/query), one-time key claims (/user/keys/claim), the room
// key in to-device messages (m.direct_to_device), and the ciphertext in the room.
func TestEncryptedAcrossServers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := cryptoclient.New(t, ctx, a, "alice", "pw-alice")
		bob := cryptoclient.New(t, ctx, b, "bob", "pw-bob")

		created, err := alice.Cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "public_chat",
			InitialState: []*mevent.Event{{Type: mevent.StateEncryption, Content: mevent.Content{
				Parsed: &mevent.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.Cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("bob joins over federation: %v", err)
		}
		alice.WaitMember(t, ctx, room, bob.Cli.UserID)
		bob.WaitMember(t, ctx, room, alice.Cli.UserID)

		if _, err := alice.Cli.SendMessageEvent(ctx, room, mevent.EventMessage, &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: "sealed on A"}); err != nil {
			t.Fatalf("alice sends encrypted: %v", err)
		}
		bob.WaitMessage(t, alice.Cli.UserID, "sealed on A")
		if _, err := bob.Cli.SendMessageEvent(ctx, room, mevent.EventMessage, &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: "opened on B"}); err != nil {
			t.Fatalf("bob sends encrypted: %v", err)
		}
		alice.WaitMessage(t, bob.Cli.UserID, "opened on B")
	})
}
