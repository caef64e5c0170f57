package clientapi_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// deviceListSync is the part of a /sync response these tests read.
type deviceListSync struct {
	NextBatch   string `json:"next_batch"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
}

// syncFrom syncs c from since without waiting.
func syncFrom(c *testserver.Client, since string) deviceListSync {
	var s deviceListSync
	c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+since, nil, &s)
	return s
}

// loginAgain logs c's user in on a new device.
func loginAgain(t *testing.T, srv *testserver.Server, c *testserver.Client, password string) *testserver.Client {
	t.Helper()
	other := srv.Client(t)
	var sess struct {
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	other.MustDo("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "password": password,
		"identifier": map[string]string{"type": "m.id.user", "user": c.UserID},
	}, &sess)
	other.Token, other.UserID, other.Device = sess.AccessToken, c.UserID, sess.DeviceID
	return other
}

// TestOwnDeviceListChanges: a user's own device changes (a new device, its keys, a
// rename, cross-signing keys) reach their other devices' device_lists.changed even
// when they share no room with anyone, as Synapse does; a fresh account's second
// client would otherwise never learn the first one's keys. A new user-signing key
// reaches only the user's own devices, never a user sharing a room with them.
func TestOwnDeviceListChanges(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		var s deviceListSync
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
		since := s.NextBatch

		master := newCSKey()
		second := loginAgain(t, srv, alice, "pw")
		for _, step := range []struct {
			name string
			do   func()
		}{
			{"a second device logs in", func() {}},
			{"the second device uploads keys", func() {
				second.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": signedDeviceKeys(t, second.UserID, second.Device)}, nil)
			}},
			{"the second device is renamed", func() {
				alice.MustDo("PUT", "/_matrix/client/v3/devices/"+second.Device, map[string]any{"display_name": "phone"}, nil)
			}},
			{"cross-signing keys are set up", func() {
				alice.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
					"master_key":       crossSigningKey(t, alice.UserID, "master", master, nil),
					"self_signing_key": crossSigningKey(t, alice.UserID, "self_signing", newCSKey(), &master),
				}, nil)
			}},
		} {
			step.do()
			s = syncFrom(alice, since)
			if !slices.Contains(s.DeviceLists.Changed, alice.UserID) {
				t.Errorf("after %s: alice's device_lists.changed = %v; want alice", step.name, s.DeviceLists.Changed)
			}
			since = s.NextBatch
			if s = syncFrom(alice, since); slices.Contains(s.DeviceLists.Changed, alice.UserID) {
				t.Errorf("after %s, synced again: changed = %v; want alice no more", step.name, s.DeviceLists.Changed)
			}
		}

		// The user-signing key is private: bob, now sharing a room, never hears of it.
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		var bs deviceListSync
		bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &bs)
		since = syncFrom(alice, since).NextBatch
		alice.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
			"user_signing_key": crossSigningKey(t, alice.UserID, "user_signing", newCSKey(), &master),
			"auth": map[string]any{"type": "m.login.password", "password": "pw",
				"identifier": map[string]string{"type": "m.id.user", "user": alice.UserID}},
		}, nil)
		if s = syncFrom(second, since); !slices.Contains(s.DeviceLists.Changed, alice.UserID) {
			t.Errorf("after a new user-signing key: alice's changed = %v; want alice", s.DeviceLists.Changed)
		}
		if bs = syncFrom(bob, bs.NextBatch); slices.Contains(bs.DeviceLists.Changed, alice.UserID) {
			t.Errorf("after alice's new user-signing key: bob's changed = %v; want no alice", bs.DeviceLists.Changed)
		}
	})
}

// TestKeyChangesFollowMemberships: /keys/changes tells what /sync would have: a
// user who came to share a room between the two tokens (and still does) is changed,
// one who left every shared room is left.
func TestKeyChangesFollowMemberships(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		var s deviceListSync
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
		from := s.NextBatch
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		joined := syncFrom(alice, from).NextBatch

		var kc struct {
			Changed []string `json:"changed"`
			Left    []string `json:"left"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+from+"&to="+joined, nil, &kc)
		if !slices.Contains(kc.Changed, bob.UserID) {
			t.Errorf("keys/changes across bob's join = %+v; want bob changed", kc)
		}
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)
		left := syncFrom(alice, joined).NextBatch
		alice.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+joined+"&to="+left, nil, &kc)
		if !slices.Equal(kc.Left, []string{bob.UserID}) || slices.Contains(kc.Changed, bob.UserID) {
			t.Errorf("keys/changes across bob's leave = %+v; want bob left", kc)
		}
	})
}

// TestUserSigningSignaturesPrivate: a signature alice makes of bob's master key with
// her user-signing key (she verified him) is served to alice only: bob and a third
// user querying bob's keys see bob's master key without it, as in Synapse.
func TestUserSigningSignaturesPrivate(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		aliceMaster, aliceUser, bobMaster := newCSKey(), newCSKey(), newCSKey()
		alice.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
			"master_key":       crossSigningKey(t, alice.UserID, "master", aliceMaster, nil),
			"user_signing_key": crossSigningKey(t, alice.UserID, "user_signing", aliceUser, &aliceMaster),
		}, nil)
		bobMasterKey := crossSigningKey(t, bob.UserID, "master", bobMaster, nil)
		bob.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": bobMasterKey}, nil)

		signed, err := gomatrixserverlib.SignJSON(alice.UserID, gomatrixserverlib.KeyID(aliceUser.id()), aliceUser.priv, bobMasterKey)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Failures map[string]map[string]any `json:"failures"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{bob.UserID: map[string]json.RawMessage{bobMaster.pub: signed}}, &res)
		if len(res.Failures) != 0 {
			t.Fatalf("alice's signature of bob's master key failed: %v", res.Failures)
		}
		for _, tc := range []struct {
			who  *testserver.Client
			sees bool
		}{{alice, true}, {bob, false}, {carol, false}} {
			var q struct {
				Master map[string]struct {
					Signatures map[string]map[string]string `json:"signatures"`
				} `json:"master_keys"`
			}
			tc.who.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{bob.UserID: {}}}, &q)
			_, sees := q.Master[bob.UserID].Signatures[alice.UserID]
			if sees != tc.sees {
				t.Errorf("%s queries bob's master key: alice's signature present = %v; want %v", tc.who, sees, tc.sees)
			}
		}
	})
}

// TestInviteeInDeviceListChanged: a user invited to a room the syncing user is in
// appears in device_lists.changed before joining (the inviter may encrypt for them,
// as with Synapse), never in left; the invitee's own sync loses no one.
func TestInviteeInDeviceListChanged(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		dave := srv.Register(t, "dave", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		var as, ds deviceListSync
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &as)
		dave.MustDo("GET", "/_matrix/client/v3/sync", nil, &ds)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", map[string]any{"user_id": dave.UserID}, nil)
		as = syncFrom(alice, as.NextBatch)
		if !slices.Contains(as.DeviceLists.Changed, dave.UserID) || slices.Contains(as.DeviceLists.Left, dave.UserID) {
			t.Errorf("alice's device_lists after inviting dave = %+v; want dave changed, not left", as.DeviceLists)
		}
		if ds = syncFrom(dave, ds.NextBatch); len(ds.DeviceLists.Left) != 0 {
			t.Errorf("dave's device_lists after his invite = %+v; want no one left", ds.DeviceLists)
		}
	})
}
