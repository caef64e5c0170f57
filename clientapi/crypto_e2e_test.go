//go:build goolm

// These tests need mautrix-go's pure-Go olm (build tag goolm, which scripts/test.sh
// sets); see package cryptoclient.

package clientapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/crypto/ssss"
	mevent "maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/homeserver/testserver/cryptoclient"
)

// TestEncryptedConversation has two mautrix-go clients with real Olm/Megolm (the
// crypto Element's bridges and bots use) share an encrypted room: each encrypts a
// message through the server's key upload, query, claim and to-device paths, and the
// other decrypts it.
func TestEncryptedConversation(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		alice := cryptoclient.New(t, ctx, srv, "alice", "pw-alice")
		bob := cryptoclient.New(t, ctx, srv, "bob", "pw-bob")

		room := encryptedRoom(t, ctx, alice, bob)

		resp, err := alice.Cli.SendMessageEvent(ctx, room, mevent.EventMessage, &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: "for bob's eyes only"})
		if err != nil {
			t.Fatalf("alice sends encrypted: %v", err)
		}
		// On the server the message is ciphertext.
		raw := srv.Client(t)
		raw.Token = bob.Cli.AccessToken
		var stored map[string]any
		raw.MustDo("GET", "/_matrix/client/v3/rooms/"+string(room)+"/event/"+string(resp.EventID), nil, &stored)
		if stored["type"] != "m.room.encrypted" {
			t.Fatalf("stored event type = %v; want m.room.encrypted", stored["type"])
		}
		bob.WaitMessage(t, alice.Cli.UserID, "for bob's eyes only")

		if _, err := bob.Cli.SendMessageEvent(ctx, room, mevent.EventMessage, &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: "received, alice"}); err != nil {
			t.Fatalf("bob sends encrypted: %v", err)
		}
		alice.WaitMessage(t, bob.Cli.UserID, "received, alice")
	})
}

// encryptedRoom has alice create an encrypted room and bob join it, and waits until
// alice's client knows bob is in it, so it shares its room keys with him.
func encryptedRoom(t *testing.T, ctx context.Context, alice, bob *cryptoclient.Client) id.RoomID {
	t.Helper()
	room, err := alice.Cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Invite: []id.UserID{bob.Cli.UserID},
		InitialState: []*mevent.Event{{Type: mevent.StateEncryption, Content: mevent.Content{
			Parsed: &mevent.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Cli.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	alice.WaitMember(t, ctx, room.RoomID, bob.Cli.UserID)
	return room.RoomID
}

// encryptedEvent fetches an event as the server stores it: still encrypted.
func encryptedEvent(t *testing.T, ctx context.Context, c *cryptoclient.Client, room id.RoomID, eventID id.EventID) *mevent.Event {
	t.Helper()
	evt, err := c.Cli.GetEvent(ctx, room, eventID)
	if err != nil {
		t.Fatal(err)
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, mevent.ErrContentAlreadyParsed) {
		t.Fatal(err)
	}
	if _, ok := evt.Content.Parsed.(*mevent.EncryptedEventContent); !ok {
		t.Fatalf("event %s is %s, not encrypted", eventID, evt.Type)
	}
	return evt
}

// secretStorageKey unlocks alice's secret storage with her recovery key.
func secretStorageKey(t *testing.T, ctx context.Context, mach *crypto.OlmMachine, recoveryKey string) *ssss.Key {
	t.Helper()
	keyID, keyData, err := mach.SSSS.GetDefaultKeyData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := keyData.VerifyRecoveryKey(keyID, recoveryKey)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestCrossSignedDeviceRestoresBackup is the rest of what an Element user lives
// through: alice sets up cross-signing and key backup on her first device, signs in
// on a new one, verifies it with her recovery key, and reads a message from before
// the new device existed — bob's, whose room key only her first device ever received.
// Everything crosses the server: cross-signing upload with UIA, signature upload and
// verification, secret storage in account data, backup versions and keys.
func TestCrossSignedDeviceRestoresBackup(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		alice := cryptoclient.New(t, ctx, srv, "alice", "pw-alice")
		bob := cryptoclient.New(t, ctx, srv, "bob", "pw-bob")
		room := encryptedRoom(t, ctx, alice, bob)

		// Bob's client must know alice is in the room to share the room key with her.
		bob.WaitMember(t, ctx, room, alice.Cli.UserID)
		const said = "said before alice's laptop existed"
		sent, err := bob.Cli.SendMessageEvent(ctx, room, mevent.EventMessage, &mevent.MessageEventContent{MsgType: mevent.MsgText, Body: said})
		if err != nil {
			t.Fatal(err)
		}
		alice.WaitMessage(t, bob.Cli.UserID, said)

		// First device: cross-signing keys, the private halves in secret storage.
		recoveryKey, _, err := alice.Mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, "pw-alice", "")
		if err != nil {
			t.Fatalf("cross-signing setup: %v", err)
		}
		if err := alice.Mach.SignOwnDevice(ctx, alice.Mach.OwnIdentity()); err != nil {
			t.Fatal(err)
		}
		if err := alice.Mach.SignOwnMasterKey(ctx); err != nil {
			t.Fatal(err)
		}
		storageKey := secretStorageKey(t, ctx, alice.Mach, recoveryKey)

		// A key backup whose auth_data the master key signs; its private key goes to
		// secret storage, as Element does.
		backupKey, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		publicKey := id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))
		master := alice.Mach.CrossSigningKeys.MasterKey
		sig, err := master.SignJSON(map[string]any{"public_key": publicKey})
		if err != nil {
			t.Fatal(err)
		}
		created, err := alice.Cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
			AuthData: backup.MegolmAuthData{PublicKey: publicKey,
				Signatures: signatures.NewSingleSignature(alice.Cli.UserID, id.KeyAlgorithmEd25519, master.PublicKey().String(), sig)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.Mach.SSSS.SetEncryptedAccountData(ctx, mevent.AccountDataMegolmBackupKey, backupKey.Bytes(), storageKey); err != nil {
			t.Fatal(err)
		}

		// Back up the room key of bob's message.
		evt := encryptedEvent(t, ctx, alice, room, sent.EventID)
		sessionID := evt.Content.AsEncrypted().SessionID
		session, err := alice.Mach.CryptoStore.GetGroupSession(ctx, room, sessionID)
		if err != nil || session == nil {
			t.Fatalf("alice's first device has no session %s: %v", sessionID, err)
		}
		first := session.Internal.FirstKnownIndex()
		exported, err := session.Internal.Export(first)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm: id.AlgorithmMegolmV1, SenderKey: session.SenderKey, ForwardingKeyChain: []string{},
			SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: session.SigningKey}, SessionKey: string(exported),
		})
		if err != nil {
			t.Fatal(err)
		}
		sessionData, err := json.Marshal(sealed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Cli.PutKeysInBackupForRoomAndSession(ctx, created.Version, room, sessionID, &mautrix.ReqKeyBackupData{
			FirstMessageIndex: int(first), IsVerified: true, SessionData: sessionData}); err != nil {
			t.Fatal(err)
		}

		// The new device cannot read bob's message: its key was never sent there.
		laptop := cryptoclient.Login(t, ctx, srv, "alice", "pw-alice")
		old := encryptedEvent(t, ctx, laptop, room, sent.EventID)
		if _, err := laptop.Mach.DecryptMegolmEvent(ctx, old); err == nil {
			t.Fatal("the new device decrypted a message whose key it never received")
		}

		// Verified with the recovery key: it fetches the cross-signing keys from secret
		// storage and signs itself; alice's first device and bob both see the signature.
		if err := laptop.Mach.VerifyWithRecoveryKey(ctx, recoveryKey); err != nil {
			t.Fatalf("verify with recovery key: %v", err)
		}
		for _, c := range []struct {
			viewer *cryptoclient.Client
			want   id.TrustState
		}{{alice, id.TrustStateCrossSignedVerified}, {bob, id.TrustStateCrossSignedTOFU}} {
			devices, err := c.viewer.Mach.FetchKeys(ctx, []id.UserID{alice.Cli.UserID}, true)
			if err != nil {
				t.Fatal(err)
			}
			device := devices[alice.Cli.UserID][laptop.Cli.DeviceID]
			if device == nil {
				t.Fatalf("%s does not see alice's new device", c.viewer.Cli.UserID)
			}
			got, err := c.viewer.Mach.ResolveTrustContext(ctx, device)
			if err != nil {
				t.Fatalf("%s resolving trust in alice's new device: %v", c.viewer.Cli.UserID, err)
			}
			if got != c.want {
				t.Errorf("%s sees alice's new device as %s; want %s", c.viewer.Cli.UserID, got, c.want)
			}
		}

		// The backup is trusted through the master key's signature the server kept.
		if _, err := laptop.Mach.FetchKeys(ctx, []id.UserID{alice.Cli.UserID}, true); err != nil {
			t.Fatal(err)
		}
		if _, err := laptop.Mach.GetAndVerifyLatestKeyBackupVersion(ctx, nil); err != nil {
			t.Fatalf("backup auth_data not trusted by its signature: %v", err)
		}

		// Restore: the backup key from secret storage, the room keys from the backup.
		restoredBytes, err := laptop.Mach.SSSS.GetDecryptedAccountData(ctx, mevent.AccountDataMegolmBackupKey, secretStorageKey(t, ctx, laptop.Mach, recoveryKey))
		if err != nil {
			t.Fatal(err)
		}
		restoredKey, err := backup.MegolmBackupKeyFromBytes(restoredBytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := laptop.Mach.DownloadAndStoreLatestKeyBackup(ctx, restoredKey); err != nil {
			t.Fatalf("restore from backup: %v", err)
		}
		decrypted, err := laptop.Mach.DecryptMegolmEvent(ctx, old)
		if err != nil {
			t.Fatalf("the new device cannot decrypt after restoring: %v", err)
		}
		if err := decrypted.Content.ParseRaw(decrypted.Type); err != nil && !errors.Is(err, mevent.ErrContentAlreadyParsed) {
			t.Fatal(err)
		}
		if body := decrypted.Content.AsMessage().Body; body != said {
			t.Fatalf("restored message reads %q; want %q", body, said)
		}
	})
}
