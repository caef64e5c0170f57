//go:build goolm

// Package cryptoclient drives a test server with mautrix-go clients that do real
// Olm/Megolm (the crypto Element's bridges and bots use), for end-to-end encryption
// tests. It needs mautrix-go's pure-Go olm, the goolm build tag the test command
// sets; without the tag the crypto package would need libolm through cgo.
package cryptoclient

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	_ "modernc.org/sqlite" // the Olm machine's store

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// Client is a logged-in device with its own Olm machine, syncing.
type Client struct {
	Cli      *mautrix.Client
	Mach     *crypto.OlmMachine
	messages chan *mevent.Event
}

// New registers user on srv and logs in a crypto-enabled device.
func New(t *testing.T, ctx context.Context, srv *testserver.Server, user, password string) *Client {
	t.Helper()
	srv.Register(t, user, password)
	return Login(t, ctx, srv, user, password)
}

// Login logs an existing user in on a new device with its own Olm machine, on a
// SQLite store, and starts syncing.
func Login(t *testing.T, ctx context.Context, srv *testserver.Server, user, password string) *Client {
	t.Helper()
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
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("pickle key of "+user+"/"+string(cli.DeviceID)), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Init(ctx); err != nil {
		t.Fatalf("%s: crypto init: %v", user, err)
	}
	cli.Crypto = helper
	c := &Client{Cli: cli, Mach: helper.Machine(), messages: make(chan *mevent.Event, 16)}
	cli.Syncer.(*mautrix.DefaultSyncer).OnEventType(mevent.EventMessage, func(_ context.Context, evt *mevent.Event) {
		c.messages <- evt
	})
	go cli.SyncWithContext(ctx)
	t.Cleanup(func() { cli.StopSync(); helper.Close() })
	return c
}

// WaitMessage waits for a (decrypted) message with body from sender.
func (c *Client) WaitMessage(t *testing.T, sender id.UserID, body string) *mevent.Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case evt := <-c.messages:
			if evt.Sender == sender && evt.Content.AsMessage().Body == body {
				return evt
			}
		case <-deadline:
			t.Fatalf("%s never saw %q from %s", c.Cli.UserID, body, sender)
		}
	}
}

// WaitMember waits until the client's state store has user joined to room.
//
// It also waits until the client knows whether the room is encrypted: a sync
// brings a room's state events in no set order, and a client that sent before it
// had stored m.room.encryption would send in the clear.
func (c *Client) WaitMember(t *testing.T, ctx context.Context, room id.RoomID, user id.UserID) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	knowsEncryption := func() bool {
		var content mevent.EncryptionEventContent
		err := c.Cli.StateEvent(ctx, room, mevent.StateEncryption, "", &content)
		if err != nil {
			return true // not encrypted: nothing to wait for
		}
		encrypted, err := c.Cli.StateStore.IsEncrypted(ctx, room)
		return err == nil && encrypted
	}
	for !c.Cli.StateStore.IsInRoom(ctx, room, user) || !knowsEncryption() {
		if time.Now().After(deadline) {
			t.Fatalf("%s's client never saw %s join %s", c.Cli.UserID, user, room)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
