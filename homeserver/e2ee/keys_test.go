package e2ee

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	gosync "sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

const server = "e2ee.test"

// keyPair is an ed25519 key a test device or cross-signing key signs with.
type keyPair struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newKeyPair(t *testing.T) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{pub, priv}
}

func (k keyPair) b64() string { return base64.RawStdEncoding.EncodeToString(k.pub) }

// sign signs obj as userID with key ID keyID, the way clients sign their keys.
func (k keyPair) sign(t *testing.T, userID, keyID string, obj any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID(keyID), k.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// deviceKeysObj is the device_keys object of userID's deviceID with signing key k.
func deviceKeysObj(userID, deviceID string, k keyPair, curve string) map[string]any {
	return map[string]any{
		"user_id": userID, "device_id": deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + deviceID: k.b64(), "curve25519:" + deviceID: curve},
	}
}

func codeOf(err error) mxerror.Code {
	if err == nil {
		return ""
	}
	if e, ok := mxerror.As(err); ok {
		return e.Code
	}
	return mxerror.Code("not a Matrix error: " + err.Error())
}

// TestUploadDeviceKeys: device keys are accepted when they have the spec's shape and
// are the caller's own device's, signed or not (clients verify signatures, as with
// Synapse and Dendrite, whose Sytest keys are unsigned); an identical re-upload is a
// no-op and a changed one replaces the keys and moves the device list. Malformed
// keys get M_BAD_JSON. Queried keys carry an unsigned object.
func TestUploadDeviceKeys(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, nil)
		alice, bob := "@alice:"+server, "@bob:"+server
		dev := newKeyPair(t)
		signed := func(obj map[string]any) json.RawMessage { return dev.sign(t, alice, "ed25519:DEV", obj) }
		good := signed(deviceKeysObj(alice, "DEV", dev, "curveA"))
		without := func(field string) json.RawMessage {
			obj := deviceKeysObj(alice, "DEV", dev, "curveA")
			obj["signatures"] = map[string]any{}
			delete(obj, field)
			return mustJSON(t, obj)
		}
		with := func(field string, v any) json.RawMessage {
			obj := deviceKeysObj(alice, "DEV", dev, "curveA")
			obj["signatures"] = map[string]any{}
			obj[field] = v
			return mustJSON(t, obj)
		}
		// Sytest's keys: a signature that is no signature, keys that are no keys.
		unsigned := mustJSON(t, map[string]any{
			"user_id": alice, "device_id": "SYTEST",
			"algorithms": []string{"m.olm.curve25519-aes-sha256"},
			"keys":       map[string]string{"curve25519:SYTEST": "curve25519+key", "ed25519:SYTEST": "ed25519+key"},
			"signatures": map[string]any{alice: map[string]string{"ed25519:SYTEST": "self+signature"}},
		})

		for _, tc := range []struct {
			name             string
			userID, deviceID string
			keys             json.RawMessage
			want             mxerror.Code
			moves            bool
		}{
			{"another user's keys", bob, "DEV", good, mxerror.InvalidParam, false},
			{"another device's keys", alice, "DEV2", good, mxerror.InvalidParam, false},
			{"not an object", alice, "DEV", json.RawMessage(`[1]`), mxerror.BadJSON, false},
			{"no user_id", alice, "DEV", without("user_id"), mxerror.BadJSON, false},
			{"no device_id", alice, "DEV", without("device_id"), mxerror.BadJSON, false},
			{"no algorithms", alice, "DEV", without("algorithms"), mxerror.BadJSON, false},
			{"no keys", alice, "DEV", without("keys"), mxerror.BadJSON, false},
			{"no signatures", alice, "DEV", without("signatures"), mxerror.BadJSON, false},
			{"keys not strings", alice, "DEV", with("keys", map[string]int{"ed25519:DEV": 1}), mxerror.BadJSON, false},
			{"key ID without algorithm", alice, "DEV", with("keys", map[string]string{"DEV": "k"}), mxerror.BadJSON, false},
			{"algorithms not a list", alice, "DEV", with("algorithms", "m.megolm.v1.aes-sha2"), mxerror.BadJSON, false},
			{"unsigned test keys", alice, "SYTEST", unsigned, "", true},
			{"own device, self-signed", alice, "DEV", good, "", true},
			{"identical again", alice, "DEV", good, "", false},
			{"new keys for an uploaded device", alice, "DEV", signed(deviceKeysObj(alice, "DEV", dev, "curveB")), "", true},
		} {
			before, err := s.DeviceListPosition(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.UploadKeys(ctx, tc.userID, tc.deviceID, Upload{DeviceKeys: tc.keys})
			if got := codeOf(err); got != tc.want {
				t.Errorf("%s: UploadKeys = %q (%v); want %q", tc.name, got, err, tc.want)
			}
			after, _ := s.DeviceListPosition(ctx)
			if moved := after != before; moved != tc.moves {
				t.Errorf("%s: device list position %d -> %d; want moved %v", tc.name, before, after, tc.moves)
			}
		}
		if err := s.DeviceDeleted(ctx, alice, "SYTEST"); err != nil {
			t.Fatal(err)
		}

		// Query returns what was stored, for all devices or the ones asked for.
		dev2 := newKeyPair(t)
		if _, err := s.UploadKeys(ctx, alice, "DEV2", Upload{DeviceKeys: dev2.sign(t, alice, "ed25519:DEV2", deviceKeysObj(alice, "DEV2", dev2, "curveC"))}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			devices []string
			want    []string
		}{
			{nil, []string{"DEV", "DEV2"}},
			{[]string{"DEV2"}, []string{"DEV2"}},
			{[]string{"NOPE"}, nil},
		} {
			got, failures, err := s.QueryKeys(ctx, server, map[string][]string{alice: tc.devices, "@carol:elsewhere.test": nil})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for id, raw := range got[alice] {
				var dk struct {
					DeviceID string          `json:"device_id"`
					Unsigned json.RawMessage `json:"unsigned"`
				}
				if err := json.Unmarshal(raw, &dk); err != nil || dk.DeviceID != id || dk.Unsigned == nil {
					t.Errorf("QueryKeys device %s: %s", id, raw)
				}
				ids = append(ids, id)
			}
			slices.Sort(ids)
			if !slices.Equal(ids, tc.want) {
				t.Errorf("QueryKeys(%s %v) devices = %v; want %v", alice, tc.devices, ids, tc.want)
			}
			if _, ok := failures["elsewhere.test"]; !ok {
				t.Errorf("QueryKeys of a remote user: failures %v; want elsewhere.test listed", failures)
			}
		}

		// A deleted device's keys go, and its user's device list moves.
		before, _ := s.DeviceListPosition(ctx)
		if err := s.DeviceDeleted(ctx, alice, "DEV"); err != nil {
			t.Fatal(err)
		}
		got, _, err := s.QueryKeys(ctx, server, map[string][]string{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got[alice]["DEV"]; ok || len(got[alice]) != 1 {
			t.Errorf("QueryKeys after deleting DEV = %v; want DEV2 only", got[alice])
		}
		changed, err := s.ChangedUsers(ctx, []string{alice, bob}, before, before+1000)
		if err != nil || !slices.Equal(changed, []string{alice}) {
			t.Errorf("ChangedUsers after device deletion = %v, %v; want [%s]", changed, err, alice)
		}
	})
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClaimKeys: each one-time key is handed out once; when none are left the
// fallback key is, again and again, until a new one replaces it.
func TestClaimKeys(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, nil)
		alice := "@alice:" + server
		otks := map[string]json.RawMessage{}
		for i := range 3 {
			otks[fmt.Sprintf("signed_curve25519:K%d", i)] = json.RawMessage(fmt.Sprintf(`{"key":"otk%d"}`, i))
		}
		counts, err := s.UploadKeys(ctx, alice, "DEV", Upload{OneTimeKeys: otks,
			FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB1": json.RawMessage(`{"key":"fb1","fallback":true}`)}})
		if err != nil {
			t.Fatal(err)
		}
		if counts["signed_curve25519"] != 3 {
			t.Fatalf("UploadKeys counts = %v; want 3 signed_curve25519", counts)
		}
		claim := func() string {
			t.Helper()
			got, err := s.ClaimKeys(ctx, map[string]map[string]string{alice: {"DEV": "signed_curve25519"}})
			if err != nil {
				t.Fatal(err)
			}
			for id := range got[alice]["DEV"] {
				return id
			}
			return ""
		}
		seen := map[string]bool{}
		for i := range 3 {
			id := claim()
			if _, ok := otks[id]; !ok || seen[id] {
				t.Errorf("claim %d = %q; want an unclaimed one-time key (had %v)", i, id, seen)
			}
			seen[id] = true
			if c, _ := s.OneTimeKeyCounts(ctx, alice, "DEV"); c["signed_curve25519"] != 2-i {
				t.Errorf("after claim %d: count %d; want %d", i, c["signed_curve25519"], 2-i)
			}
		}
		if types, _ := s.UnusedFallbackKeyTypes(ctx, alice, "DEV"); !slices.Equal(types, []string{"signed_curve25519"}) {
			t.Errorf("unused fallback types before use = %v; want [signed_curve25519]", types)
		}
		for i := range 2 {
			if id := claim(); id != "signed_curve25519:FB1" {
				t.Errorf("claim %d with no one-time keys left = %q; want the fallback key", i, id)
			}
		}
		if types, _ := s.UnusedFallbackKeyTypes(ctx, alice, "DEV"); len(types) != 0 {
			t.Errorf("unused fallback types after use = %v; want none", types)
		}
		if _, err := s.UploadKeys(ctx, alice, "DEV", Upload{FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB2": json.RawMessage(`{"key":"fb2"}`)}}); err != nil {
			t.Fatal(err)
		}
		if id := claim(); id != "signed_curve25519:FB2" {
			t.Errorf("claim after a new fallback key = %q; want signed_curve25519:FB2", id)
		}

		for _, tc := range []struct {
			name         string
			user, device string
			alg          string
		}{
			{"unknown algorithm", alice, "DEV", "curve448"},
			{"unknown device", alice, "NODEV", "signed_curve25519"},
			{"unknown user", "@nobody:" + server, "DEV", "signed_curve25519"},
		} {
			got, err := s.ClaimKeys(ctx, map[string]map[string]string{tc.user: {tc.device: tc.alg}})
			if err != nil || len(got) != 0 {
				t.Errorf("%s: ClaimKeys = %v, %v; want nothing", tc.name, got, err)
			}
		}

		// A malformed key fails the whole upload: nothing of it is stored.
		for _, tc := range []struct {
			name string
			up   Upload
			want mxerror.Code
		}{
			{"key ID without algorithm", Upload{OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:OK": json.RawMessage(`{}`), "K9": json.RawMessage(`{}`)}}, mxerror.InvalidParam},
			{"key not JSON", Upload{OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:OK": json.RawMessage(`{}`), "signed_curve25519:BAD": json.RawMessage(`{`)}}, mxerror.BadJSON},
			{"fallback key ID without algorithm", Upload{OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:OK": json.RawMessage(`{}`)},
				FallbackKeys: map[string]json.RawMessage{":FB": json.RawMessage(`{}`)}}, mxerror.InvalidParam},
		} {
			if _, err := s.UploadKeys(ctx, alice, "DEV", tc.up); codeOf(err) != tc.want {
				t.Errorf("%s: UploadKeys = %v; want %q", tc.name, err, tc.want)
			}
			if c, _ := s.OneTimeKeyCounts(ctx, alice, "DEV"); c["signed_curve25519"] != 0 {
				t.Errorf("%s: %d one-time keys stored by a refused upload; want 0", tc.name, c["signed_curve25519"])
			}
		}
	})
}

// TestClaimKeysConcurrent: claimers racing for one device's keys never get the same
// one-time key, and together get every one of them before any gets the fallback.
func TestClaimKeysConcurrent(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, nil)
		alice := "@alice:" + server
		const keys, claimers, each = 20, 6, 5 // 30 claims for 20 keys
		otks := map[string]json.RawMessage{}
		for i := range keys {
			otks[fmt.Sprintf("signed_curve25519:K%02d", i)] = json.RawMessage(`{}`)
		}
		if _, err := s.UploadKeys(ctx, alice, "DEV", Upload{OneTimeKeys: otks,
			FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB": json.RawMessage(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		var mu gosync.Mutex
		got := map[string]int{}
		var wg gosync.WaitGroup
		for range claimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					res, err := s.ClaimKeys(ctx, map[string]map[string]string{alice: {"DEV": "signed_curve25519"}})
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for id := range res[alice]["DEV"] {
						got[id]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		for id, n := range got {
			if id != "signed_curve25519:FB" && n != 1 {
				t.Errorf("one-time key %s handed out %d times; want once", id, n)
			}
		}
		if len(got) != keys+1 || got["signed_curve25519:FB"] != claimers*each-keys {
			t.Errorf("claims: %d distinct keys, fallback %d times; want %d one-time keys and the fallback %d times",
				len(got)-1, got["signed_curve25519:FB"], keys, claimers*each-keys)
		}
	})
}

// TestUploadCrossSigningKeys: cross-signing keys must be the user's, carry their
// usage and one ed25519 key, and the self- and user-signing keys must be signed by
// the master key, uploaded with them or before.
func TestUploadCrossSigningKeys(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, nil)
		alice := "@alice:" + server
		master, ssk, usk, stranger := newKeyPair(t), newKeyPair(t), newKeyPair(t), newKeyPair(t)
		key := func(user, usage string, k keyPair) map[string]any {
			return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + k.b64(): k.b64()}}
		}
		masterID := "ed25519:" + master.b64()
		goodMaster := mustJSON(t, key(alice, Master, master))
		goodSSK := master.sign(t, alice, masterID, key(alice, SelfSigning, ssk))
		twoKeys := key(alice, Master, master)
		twoKeys["keys"] = map[string]string{"ed25519:a": master.b64(), "ed25519:b": ssk.b64()}
		curveMaster := key(alice, Master, master)
		curveMaster["keys"] = map[string]string{"curve25519:a": master.b64()}

		for _, tc := range []struct {
			name                   string
			master, self, userSign json.RawMessage
			want                   mxerror.Code
		}{
			{"self-signing before any master", nil, goodSSK, nil, mxerror.InvalidParam},
			{"master of another user", mustJSON(t, key("@bob:"+server, Master, master)), nil, nil, mxerror.InvalidParam},
			{"master without its usage", mustJSON(t, key(alice, SelfSigning, master)), nil, nil, mxerror.InvalidParam},
			{"master with two keys", mustJSON(t, twoKeys), nil, nil, mxerror.InvalidParam},
			{"master not ed25519", mustJSON(t, curveMaster), nil, nil, mxerror.InvalidParam},
			{"self-signing not signed by the master", goodMaster, stranger.sign(t, alice, "ed25519:"+stranger.b64(), key(alice, SelfSigning, ssk)), nil, mxerror.InvalidParam},
			{"self-signing unsigned", goodMaster, mustJSON(t, key(alice, SelfSigning, ssk)), nil, mxerror.InvalidParam},
			{"master and signed self-signing", goodMaster, goodSSK, nil, ""},
			{"user-signing with the wrong usage", nil, nil, master.sign(t, alice, masterID, key(alice, SelfSigning, usk)), mxerror.InvalidParam},
			{"user-signing signed by the stored master", nil, nil, master.sign(t, alice, masterID, key(alice, UserSigning, usk)), ""},
		} {
			err := s.UploadCrossSigningKeys(ctx, alice, tc.master, tc.self, tc.userSign)
			if got := codeOf(err); got != tc.want {
				t.Errorf("%s: UploadCrossSigningKeys = %q (%v); want %q", tc.name, got, err, tc.want)
			}
			if tc.name == "master without its usage" {
				// Nothing of a refused upload is stored.
				if has, err := s.HasMasterKey(ctx, alice); err != nil || has {
					t.Errorf("HasMasterKey after refused uploads = %v, %v; want false", has, err)
				}
			}
		}
		if has, err := s.HasMasterKey(ctx, alice); err != nil || !has {
			t.Errorf("HasMasterKey = %v, %v; want true", has, err)
		}
	})
}
