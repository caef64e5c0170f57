package clientapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// signedDeviceKeys returns device keys for the client's device, self-signed with a
// fresh ed25519 key as a real client would upload them.
// signedDeviceKeys are self-signed device keys for a device, as a client makes them.
func signedDeviceKeys(t *testing.T, userID, deviceID string) json.RawMessage {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	dk := map[string]any{
		"user_id": userID, "device_id": deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]string{
			"curve25519:" + deviceID: base64.RawStdEncoding.EncodeToString(make([]byte, 32)),
			"ed25519:" + deviceID:    base64.RawStdEncoding.EncodeToString(pub),
		},
	}
	raw, _ := json.Marshal(dk)
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+deviceID), priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestDeviceKeysClaimsAndToDevice(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		var aliceSync struct {
			NextBatch   string `json:"next_batch"`
			DeviceLists struct {
				Changed []string `json:"changed"`
			} `json:"device_lists"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &aliceSync)

		bobKeys := signedDeviceKeys(t, bob.UserID, bob.Device)
		otks := map[string]any{}
		for i := 0; i < 3; i++ {
			otks[fmt.Sprintf("signed_curve25519:k%d", i)] = map[string]string{"key": fmt.Sprint("otk", i)}
		}
		var up struct {
			Counts map[string]int `json:"one_time_key_counts"`
		}
		bob.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": bobKeys, "one_time_keys": otks,
			"fallback_keys": map[string]any{"signed_curve25519:fb": map[string]any{"key": "fallback", "fallback": true}}}, &up)
		if up.Counts["signed_curve25519"] != 3 {
			t.Fatalf("one-time key counts = %v; want 3", up.Counts)
		}

		// Alice learns that bob's devices changed, and can fetch his keys.
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+aliceSync.NextBatch, nil, &aliceSync)
		if len(aliceSync.DeviceLists.Changed) != 1 || aliceSync.DeviceLists.Changed[0] != "@bob:localhost" {
			t.Errorf("device_lists.changed = %v; want bob", aliceSync.DeviceLists.Changed)
		}
		var q struct {
			DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
			Failures   map[string]any                       `json:"failures"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{"@bob:localhost": {}, "@x:elsewhere.example": {}}}, &q)
		if q.DeviceKeys["@bob:localhost"][bob.Device]["device_id"] != bob.Device || q.Failures["elsewhere.example"] == nil {
			t.Errorf("keys/query = %+v", q)
		}

		// Claims: three distinct one-time keys, then the fallback key, repeatedly.
		seen := map[string]bool{}
		for i := 0; i < 5; i++ {
			var claim struct {
				Keys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			}
			alice.MustDo("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{"@bob:localhost": map[string]string{bob.Device: "signed_curve25519"}}}, &claim)
			got := claim.Keys["@bob:localhost"][bob.Device]
			if len(got) != 1 {
				t.Fatalf("claim %d = %v; want one key", i, got)
			}
			for id := range got {
				switch {
				case i < 3 && (id == "signed_curve25519:fb" || seen[id]):
					t.Errorf("claim %d gave %s; want an unused one-time key", i, id)
				case i >= 3 && id != "signed_curve25519:fb":
					t.Errorf("claim %d gave %s; want the fallback key", i, id)
				}
				seen[id] = true
			}
		}
		var bobSync struct {
			NextBatch     string         `json:"next_batch"`
			Counts        map[string]int `json:"device_one_time_keys_count"`
			FallbackTypes []string       `json:"device_unused_fallback_key_types"`
			ToDevice      struct {
				Events []struct {
					Sender  string         `json:"sender"`
					Type    string         `json:"type"`
					Content map[string]any `json:"content"`
				} `json:"events"`
			} `json:"to_device"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &bobSync)
		if bobSync.Counts["signed_curve25519"] != 0 || len(bobSync.FallbackTypes) != 0 {
			t.Errorf("bob's counts = %v, unused fallback = %v; want 0 and none (it was used)", bobSync.Counts, bobSync.FallbackTypes)
		}

		// To-device: idempotent per transaction, delivered until acknowledged, once.
		msg := map[string]any{"messages": map[string]any{"@bob:localhost": map[string]any{"*": map[string]string{"hello": "bob"}}}}
		alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", msg, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", msg, nil)
		since := bobSync.NextBatch
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+since, nil, &bobSync)
		if len(bobSync.ToDevice.Events) != 1 || bobSync.ToDevice.Events[0].Content["hello"] != "bob" || bobSync.ToDevice.Events[0].Sender != "@alice:localhost" {
			t.Fatalf("to-device = %+v; want alice's one message", bobSync.ToDevice.Events)
		}
		next := bobSync.NextBatch
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+since, nil, &bobSync)
		if len(bobSync.ToDevice.Events) != 1 {
			t.Errorf("re-sync from the old token = %d messages; want the unacknowledged one again", len(bobSync.ToDevice.Events))
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+next, nil, &bobSync)
		if len(bobSync.ToDevice.Events) != 0 {
			t.Errorf("after acknowledging = %d messages; want none", len(bobSync.ToDevice.Events))
		}

		var e errBody
		bad := signedDeviceKeys(t, bob.UserID, bob.Device) // a device_keys object with its signatures taken off below
		unsigned := map[string]any{}
		json.Unmarshal(bad, &unsigned)
		delete(unsigned, "signatures")
		for _, tc := range []struct {
			name string
			c    *testserver.Client
			body any
			code string
		}{
			{"no signatures field", bob, map[string]any{"device_keys": unsigned}, "M_BAD_JSON"},
			{"someone else's device", alice, map[string]any{"device_keys": bobKeys}, "M_INVALID_PARAM"},
			{"bad key id", bob, map[string]any{"one_time_keys": map[string]any{"nocolon": map[string]string{}}}, "M_INVALID_PARAM"},
		} {
			if st := tc.c.Do("POST", "/_matrix/client/v3/keys/upload", tc.body, &e); st != 400 || e.ErrCode != tc.code {
				t.Errorf("%s = %d %s; want 400 %s", tc.name, st, e.ErrCode, tc.code)
			}
		}
		if st := alice.Do("PUT", "/_matrix/client/v3/sendToDevice/m.test/t2", `{"messages":{"@bob:localhost":{"*":"not an object"}}}`, &e); st != 400 || e.ErrCode != "M_BAD_JSON" {
			t.Errorf("to-device with a non-object = %d %s", st, e.ErrCode)
		}
		if st := alice.Do("GET", "/_matrix/client/v3/keys/changes?from=bogus&to=s1", nil, &e); st != 400 {
			t.Errorf("keys/changes with a bad token = %d", st)
		}

		// Deleting bob's device deletes its keys.
		bob.MustDo("POST", "/_matrix/client/v3/logout", nil, nil)
		alice.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{"@bob:localhost": {}}}, &q)
		if len(q.DeviceKeys["@bob:localhost"]) != 0 {
			t.Errorf("keys of a logged-out device still served: %v", q.DeviceKeys["@bob:localhost"])
		}
	})
}

func TestConcurrentClaimsNeverShareAKey(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		bob := srv.Register(t, "bob", "pw")
		const keys, claimers = 12, 16
		otks := map[string]any{}
		for i := 0; i < keys; i++ {
			otks[fmt.Sprintf("signed_curve25519:k%02d", i)] = map[string]string{"key": fmt.Sprint(i)}
		}
		bob.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": otks}, nil)
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for i := 0; i < claimers; i++ {
			c := srv.Register(t, fmt.Sprintf("c%d", i), "pw")
			wg.Add(1)
			go func() {
				defer wg.Done()
				var claim struct {
					Keys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
				}
				c.MustDo("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{"@bob:localhost": map[string]string{bob.Device: "signed_curve25519"}}}, &claim)
				mu.Lock()
				defer mu.Unlock()
				for id := range claim.Keys["@bob:localhost"][bob.Device] {
					got[id]++
				}
			}()
		}
		wg.Wait()
		if len(got) != keys {
			t.Errorf("%d distinct keys handed out; want all %d", len(got), keys)
		}
		for id, n := range got {
			if n != 1 {
				t.Errorf("key %s handed out %d times", id, n)
			}
		}
	})
}

func TestKeyBackup(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		var e errBody
		if st := alice.Do("GET", "/_matrix/client/v3/room_keys/version", nil, &e); st != 404 || e.ErrCode != "M_NOT_FOUND" {
			t.Errorf("no backup yet = %d %s; want 404 M_NOT_FOUND", st, e.ErrCode)
		}
		alg := "m.megolm_backup.v1.curve25519-aes-sha2"
		var v1, v2 map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]string{"public_key": "a"}}, &v1)
		room := "!r:localhost"
		put := func(version string, d map[string]any) map[string]any {
			var out map[string]any
			alice.MustDo("PUT", "/_matrix/client/v3/room_keys/keys/"+room+"/s1?version="+version, d, &out)
			return out
		}
		session := func(fmi, fwd int, verified bool, data string) map[string]any {
			return map[string]any{"first_message_index": fmi, "forwarded_count": fwd, "is_verified": verified, "session_data": map[string]string{"d": data}}
		}
		r1 := put(v1["version"], session(5, 1, false, "first"))
		if r1["count"] != float64(1) {
			t.Fatalf("after first put = %v", r1)
		}
		// Replacement rules: a worse copy is ignored (etag unchanged), a better one wins.
		r2 := put(v1["version"], session(9, 0, false, "worse index"))
		if r2["etag"] != r1["etag"] {
			t.Errorf("a worse session changed the etag: %v → %v", r1["etag"], r2["etag"])
		}
		put(v1["version"], session(5, 0, false, "fewer forwards"))
		put(v1["version"], session(50, 3, true, "verified"))
		put(v1["version"], session(0, 0, false, "unverified best index"))
		var got map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/room_keys/keys/"+room+"/s1?version="+v1["version"], nil, &got)
		if got["session_data"].(map[string]any)["d"] != "verified" {
			t.Errorf("kept session = %v; want the verified one", got)
		}

		// A new version becomes current; writing to the old one is refused.
		alice.MustDo("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]string{"public_key": "b"}}, &v2)
		if st := alice.Do("PUT", "/_matrix/client/v3/room_keys/keys/"+room+"/s1?version="+v1["version"], session(0, 0, true, "x"), &e); st != 403 || e.ErrCode != "M_WRONG_ROOM_KEYS_VERSION" {
			t.Errorf("put to an old version = %d %s; want 403 M_WRONG_ROOM_KEYS_VERSION", st, e.ErrCode)
		}
		var cur map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/room_keys/version", nil, &cur)
		if cur["version"] != v2["version"] || cur["count"] != float64(0) {
			t.Errorf("current version = %v; want %s with 0 keys", cur, v2["version"])
		}
		alice.MustDo("PUT", "/_matrix/client/v3/room_keys/keys?version="+v2["version"], map[string]any{"rooms": map[string]any{
			room: map[string]any{"sessions": map[string]any{"s1": session(0, 0, true, "a"), "s2": session(0, 0, true, "b")}}}}, nil)
		var all struct {
			Rooms map[string]struct {
				Sessions map[string]any `json:"sessions"`
			} `json:"rooms"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/room_keys/keys?version="+v2["version"], nil, &all)
		if len(all.Rooms[room].Sessions) != 2 {
			t.Errorf("all keys = %+v; want 2 sessions", all)
		}
		if st := alice.Do("PUT", "/_matrix/client/v3/room_keys/version/"+v2["version"], map[string]any{"algorithm": "other", "auth_data": map[string]string{}}, &e); st != 400 {
			t.Errorf("changing the algorithm = %d; want 400", st)
		}
		alice.MustDo("PUT", "/_matrix/client/v3/room_keys/version/"+v2["version"], map[string]any{"algorithm": alg, "auth_data": map[string]string{"public_key": "c"}}, nil)
		var del map[string]any
		alice.MustDo("DELETE", "/_matrix/client/v3/room_keys/keys/"+room+"/s1?version="+v2["version"], nil, &del)
		if del["count"] != float64(1) {
			t.Errorf("after deleting one session = %v", del)
		}
		alice.MustDo("DELETE", "/_matrix/client/v3/room_keys/version/"+v2["version"], nil, nil)
		alice.MustDo("GET", "/_matrix/client/v3/room_keys/version", nil, &cur)
		if cur["version"] != v1["version"] {
			t.Errorf("after deleting v2 the current version = %v; want %s", cur["version"], v1["version"])
		}
		if st := alice.Do("GET", "/_matrix/client/v3/room_keys/version/99", nil, &e); st != 404 {
			t.Errorf("unknown version = %d", st)
		}
		if st := alice.Do("GET", "/_matrix/client/v3/room_keys/keys", nil, &e); st != 400 || e.ErrCode != "M_MISSING_PARAM" {
			t.Errorf("keys without version = %d %s", st, e.ErrCode)
		}
	})
}

type csKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func newCSKey() csKey {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return csKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

func (k csKey) id() string { return "ed25519:" + k.pub }

// crossSigningKey builds a cross-signing key object for user, signed by signer if
// given.
func crossSigningKey(t *testing.T, user, usage string, k csKey, signer *csKey) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{k.id(): k.pub}})
	if signer == nil {
		return raw
	}
	signed, err := gomatrixserverlib.SignJSON(user, gomatrixserverlib.KeyID(signer.id()), signer.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestCrossSigning(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		deviceKeys := signedDeviceKeys(t, alice.UserID, alice.Device)
		alice.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": deviceKeys}, nil)

		master, self, user := newCSKey(), newCSKey(), newCSKey()
		alice.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
			"master_key":       crossSigningKey(t, alice.UserID, "master", master, nil),
			"self_signing_key": crossSigningKey(t, alice.UserID, "self_signing", self, &master),
			"user_signing_key": crossSigningKey(t, alice.UserID, "user_signing", user, &master),
		}, nil)

		// Sign alice's device with her self-signing key.
		var dev map[string]any
		json.Unmarshal(deviceKeys, &dev)
		delete(dev, "signatures")
		raw, _ := json.Marshal(dev)
		signedDev, _ := gomatrixserverlib.SignJSON(alice.UserID, gomatrixserverlib.KeyID(self.id()), self.priv, raw)
		var res struct {
			Failures map[string]map[string]any `json:"failures"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{alice.UserID: map[string]json.RawMessage{alice.Device: signedDev}}, &res)
		if len(res.Failures) != 0 {
			t.Fatalf("valid device signature failed: %v", res.Failures)
		}
		// A forged signature is reported per key.
		forged, _ := gomatrixserverlib.SignJSON(alice.UserID, gomatrixserverlib.KeyID(self.id()), newCSKey().priv, raw)
		// (through the unstable path older clients still use)
		alice.MustDo("POST", "/_matrix/client/unstable/keys/signatures/upload", map[string]any{alice.UserID: map[string]json.RawMessage{alice.Device: forged}}, &res)
		if res.Failures[alice.UserID][alice.Device] == nil {
			t.Errorf("forged signature accepted: %v", res.Failures)
		}

		var q struct {
			DeviceKeys map[string]map[string]struct {
				Signatures map[string]map[string]string `json:"signatures"`
			} `json:"device_keys"`
			Master      map[string]any `json:"master_keys"`
			SelfSigning map[string]any `json:"self_signing_keys"`
			UserSigning map[string]any `json:"user_signing_keys"`
		}
		bob.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{alice.UserID: {}}}, &q)
		if q.Master[alice.UserID] == nil || q.SelfSigning[alice.UserID] == nil || q.UserSigning[alice.UserID] != nil {
			t.Errorf("bob's view: master %v, self %v, user %v; want master and self-signing only", q.Master != nil, q.SelfSigning[alice.UserID] != nil, q.UserSigning[alice.UserID] != nil)
		}
		if q.DeviceKeys[alice.UserID][alice.Device].Signatures[alice.UserID][self.id()] == "" {
			t.Errorf("device keys lack the self-signing signature: %v", q.DeviceKeys[alice.UserID][alice.Device].Signatures)
		}
		alice.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{alice.UserID: {}}}, &q)
		if q.UserSigning[alice.UserID] == nil {
			t.Error("alice does not see her own user-signing key")
		}

		// Replacing keys needs the password; a self-signing key not signed by the
		// master key is refused.
		var e errBody
		if st := alice.Do("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
			"master_key": crossSigningKey(t, alice.UserID, "master", newCSKey(), nil)}, &e); st != 401 {
			t.Errorf("replacing the master key without auth = %d; want 401", st)
		}
		if st := bob.Do("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
			"master_key":       crossSigningKey(t, bob.UserID, "master", newCSKey(), nil),
			"self_signing_key": crossSigningKey(t, bob.UserID, "self_signing", newCSKey(), &self)}, &e); st != 400 || e.ErrCode != "M_INVALID_PARAM" {
			t.Errorf("self-signing key not signed by the master = %d %s; want 400 M_INVALID_PARAM", st, e.ErrCode)
		}
		if st := bob.Do("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
			"master_key": crossSigningKey(t, alice.UserID, "master", newCSKey(), nil)}, &e); st != 400 {
			t.Errorf("uploading a master key for someone else = %d; want 400", st)
		}
	})
}

// TestDeviceListsJoinAndLeave: a user who comes to share a room appears in
// device_lists.changed (the client must fetch their devices), and one who shares no
// room any more in device_lists.left (the client stops tracking them), in /sync and
// in sliding sync's e2ee extension.
func TestDeviceListsJoinAndLeave(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		carol := srv.Register(t, "carol", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		type lists struct {
			Changed []string `json:"changed"`
			Left    []string `json:"left"`
		}
		var s struct {
			NextBatch   string `json:"next_batch"`
			DeviceLists lists  `json:"device_lists"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
		ss := sliding(t, alice, "", map[string]any{"conn_id": "e2ee", "extensions": map[string]any{"e2ee": map[string]any{"enabled": true}}})

		carol.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+s.NextBatch, nil, &s)
		if !slices.Contains(s.DeviceLists.Changed, carol.UserID) || len(s.DeviceLists.Left) != 0 {
			t.Errorf("after carol joined: device_lists = %+v; want carol changed", s.DeviceLists)
		}
		ss = sliding(t, alice, "?pos="+ss.Pos, map[string]any{"conn_id": "e2ee"})
		if ss.Extensions.E2EE == nil || !slices.Contains(ss.Extensions.E2EE.DeviceLists.Changed, carol.UserID) {
			t.Errorf("sliding e2ee after carol joined = %+v; want carol changed", ss.Extensions.E2EE)
		}

		carol.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", map[string]any{}, nil)
		s.DeviceLists = lists{}
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+s.NextBatch, nil, &s)
		if !slices.Equal(s.DeviceLists.Left, []string{carol.UserID}) || slices.Contains(s.DeviceLists.Changed, carol.UserID) {
			t.Errorf("after carol left: device_lists = %+v; want carol left", s.DeviceLists)
		}
		ss = sliding(t, alice, "?pos="+ss.Pos, map[string]any{"conn_id": "e2ee"})
		if ss.Extensions.E2EE == nil || !slices.Equal(ss.Extensions.E2EE.DeviceLists.Left, []string{carol.UserID}) {
			t.Errorf("sliding e2ee after carol left = %+v; want carol left", ss.Extensions.E2EE)
		}
	})
}
