//go:build goolm

// This test needs mautrix-go's pure-Go olm (build tag goolm, which scripts/test.sh
// sets); without the tag the crypto package would need libolm through cgo.

package clientapi_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	_ "modernc.org/sqlite"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

type cryptoClient struct {
	cli      *mautrix.Client
	messages chan *mevent.Event
}

// newCryptoClient logs in with mautrix-go, sets up its Olm machine on a SQLite store
// and starts syncing.
func newCryptoClient(t *testing.T, ctx context.Context, srv *testserver.Server, user, password string) *cryptoClient {
	t.Helper()
	srv.Register(t, user, password)
	cli, err := mautrix.NewClient(srv.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}, Password: password, StoreCredentials: true}); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "crypto.db")+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	db, err := dbutil.NewWithDB(raw, "sqlite3")
	if err != nil {
		t.Fatal(err)
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("pickle key of "+user), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Init(ctx); err != nil {
		t.Fatalf("%s: crypto init: %v", user, err)
	}
	cli.Crypto = helper
	c := &cryptoClient{cli: cli, messages: make(chan *mevent.Event, 16)}
	cli.Syncer.(*mautrix.DefaultSyncer).OnEventType(mevent.EventMessage, func(_ context.Context, evt *mevent.Event) {
		c.messages <- evt
	})
	go cli.SyncWithContext(ctx)
	t.Cleanup(func() { cli.StopSync(); helper.Close() })
	return c
}

// waitMessage waits for a message with body from sender.
func (c *cryptoClient) waitMessage(t *testing.T, sender id.UserID, body string) *mevent.Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case evt := <-c.messages:
			if evt.Sender == sender && evt.Content.AsMessage().Body == body {
				return evt
			}
		case <-deadline:
			t.Fatalf("%s never saw %q from %s", c.cli.UserID, body, sender)
		}
	}
}

// TestEncryptedConversation has two mautrix-go clients with real Olm/Megolm (the
// crypto Element's bridges and bots use) share an encrypted room: each encrypts a
// message through the server's key upload, query, claim and to-device paths, and the
// other decrypts it.
func TestEncryptedConversation(t *testing.T) {
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		alice := newCryptoClient(t, ctx, srv, "alice", "pw-alice")
		bob := newCryptoClient(t, ctx, srv, "bob", "pw-bob")

		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat", Invite: []id.UserID{bob.cli.UserID},
			InitialState: []*mevent.Event{{Type: mevent.StateEncryption, Content: mevent.Content{
				Parsed: &mevent.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		// Wait until alice's client has seen bob join, so it shares the room key with him.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if alice.cli.StateStore.IsInRoom(ctx, room.RoomID, bob.cli.UserID) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("alice's client never saw bob join")
			}
			time.Sleep(50 * time.Millisecond)
		}

		resp, err := alice.cli.SendMessageEvent(ctx, room.RoomID, mevent.EventMessage, &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: "for bob's eyes only"})
		if err != nil {
			t.Fatalf("alice sends encrypted: %v", err)
		}
		// On the server the message is ciphertext.
		raw := srv.Client(t)
		raw.Token = bob.cli.AccessToken
		var stored map[string]any
		raw.MustDo("GET", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/event/"+string(resp.EventID), nil, &stored)
		if stored["type"] != "m.room.encrypted" {
			t.Fatalf("stored event type = %v; want m.room.encrypted", stored["type"])
		}
		bob.waitMessage(t, alice.cli.UserID, "for bob's eyes only")

		if _, err := bob.cli.SendMessageEvent(ctx, room.RoomID, mevent.EventMessage, &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: "received, alice"}); err != nil {
			t.Fatalf("bob sends encrypted: %v", err)
		}
		alice.waitMessage(t, bob.cli.UserID, "received, alice")
	})
}
