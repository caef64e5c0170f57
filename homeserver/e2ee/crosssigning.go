package e2ee

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// The cross-signing key types.
const (
	Master      = "master"
	SelfSigning = "self_signing"
	UserSigning = "user_signing"
)

type crossSigningKey struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// publicKey returns the key's single ed25519 key ID and public key.
func (k crossSigningKey) publicKey() (string, ed25519.PublicKey, error) {
	if len(k.Keys) != 1 {
		return "", nil, mxerror.New(mxerror.InvalidParam, "a cross-signing key must hold exactly one key")
	}
	for id, b64 := range k.Keys {
		if !strings.HasPrefix(id, "ed25519:") {
			return "", nil, mxerror.New(mxerror.InvalidParam, "cross-signing keys must be ed25519")
		}
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return "", nil, mxerror.New(mxerror.InvalidParam, "%s is not an ed25519 public key", id)
		}
		return id, raw, nil
	}
	return "", nil, nil
}

func parseCrossSigningKey(raw json.RawMessage, userID, usage string) (crossSigningKey, error) {
	var k crossSigningKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return k, mxerror.New(mxerror.BadJSON, "%s key: %v", usage, err)
	}
	if k.UserID != userID {
		return k, mxerror.New(mxerror.InvalidParam, "%s key is for %s, not %s", usage, k.UserID, userID)
	}
	found := false
	for _, u := range k.Usage {
		found = found || u == usage
	}
	if !found {
		return k, mxerror.New(mxerror.InvalidParam, "%s key lacks usage %s", usage, usage)
	}
	_, _, err := k.publicKey()
	return k, err
}

// HasMasterKey reports whether the user uploaded a master key.
func (s *Service) HasMasterKey(ctx context.Context, userID string) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM cross_signing_keys WHERE user_id = $1 AND key_type = 'master'`, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// UploadCrossSigningKeys stores the user's cross-signing keys. The self-signing and
// user-signing keys must be signed by the master key (the one uploaded with them, or
// the stored one).
func (s *Service) UploadCrossSigningKeys(ctx context.Context, userID string, master, selfSigning, userSigning json.RawMessage) error {
	var masterKey crossSigningKey
	var err error
	has := func(r json.RawMessage) bool { return len(r) > 0 && string(r) != "null" }
	if has(master) {
		if masterKey, err = parseCrossSigningKey(master, userID, Master); err != nil {
			return err
		}
	} else {
		raw, err := s.crossSigningKey(ctx, userID, Master)
		if err != nil {
			return err
		}
		if raw == nil && (has(selfSigning) || has(userSigning)) {
			return mxerror.New(mxerror.InvalidParam, "upload a master key first")
		}
		if raw != nil {
			json.Unmarshal(raw, &masterKey)
		}
	}
	type upload struct {
		typ string
		raw json.RawMessage
	}
	var ups []upload
	if has(master) {
		ups = append(ups, upload{Master, master})
	}
	for _, u := range []upload{{SelfSigning, selfSigning}, {UserSigning, userSigning}} {
		if !has(u.raw) {
			continue
		}
		if _, err := parseCrossSigningKey(u.raw, userID, u.typ); err != nil {
			return err
		}
		id, pub, err := masterKey.publicKey()
		if err != nil {
			return err
		}
		if err := gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(id), pub, u.raw); err != nil {
			return mxerror.New(mxerror.InvalidParam, "%s key is not signed by the master key: %v", u.typ, err)
		}
		ups = append(ups, u)
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		for _, u := range ups {
			if _, err := tx.Exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, u.typ, string(u.raw)); err != nil {
				return fmt.Errorf("store %s key: %w", u.typ, err)
			}
		}
		// The user-signing key is the user's alone: only their own devices hear of it.
		if public := has(master) || has(selfSigning); !public {
			return markOwnDeviceListChange(ctx, tx, userID)
		}
		return markDeviceListChange(ctx, tx, userID)
	})
	switch {
	case err != nil:
	case has(master) || has(selfSigning):
		s.deviceListChanged(userID)
	default:
		s.notify(userID)
	}
	return err
}

// crossSigningKey is the user's key of type typ with the signatures viewer may see
// (see withSignatures); viewer "" sees the owner's own signatures only.
func (s *Service) crossSigningKey(ctx context.Context, userID, typ string) (json.RawMessage, error) {
	return s.crossSigningKeyFor(ctx, userID, typ, "")
}

func (s *Service) crossSigningKeyFor(ctx context.Context, userID, typ, viewer string) (json.RawMessage, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT key_json FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2`, userID, typ).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s key: %w", typ, err)
	}
	return s.withSignatures(ctx, userID, crossKeyTarget(json.RawMessage(raw)), json.RawMessage(raw), viewer)
}

// crossKeyTarget is how signatures of a cross-signing key are filed: by its public key.
func crossKeyTarget(raw json.RawMessage) string {
	var k crossSigningKey
	json.Unmarshal(raw, &k)
	for _, b64 := range k.Keys {
		return b64
	}
	return ""
}

// withSignatures merges uploaded signatures into a signed object: the owner's own,
// and another user's (made with their user-signing key) only when that user is the
// viewer. Who verified whom is the signer's business, as in Synapse: the signed
// user and everyone else do not see it.
func (s *Service) withSignatures(ctx context.Context, userID, target string, raw json.RawMessage, viewer string) (json.RawMessage, error) {
	rows, err := s.db.Query(ctx, `SELECT signer, signer_key_id, signature FROM cross_signing_sigs WHERE target_user = $1 AND target_key = $2`, userID, target)
	if err != nil {
		return nil, fmt.Errorf("read signatures: %w", err)
	}
	defer rows.Close()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return raw, nil
	}
	sigs := map[string]map[string]string{}
	if obj["signatures"] != nil {
		json.Unmarshal(obj["signatures"], &sigs)
	}
	any := false
	for rows.Next() {
		var signer, keyID, sig string
		if err := rows.Scan(&signer, &keyID, &sig); err != nil {
			return nil, err
		}
		if signer != userID && signer != viewer {
			continue
		}
		if sigs[signer] == nil {
			sigs[signer] = map[string]string{}
		}
		sigs[signer][keyID] = sig
		any = true
	}
	if !any {
		return raw, rows.Err()
	}
	obj["signatures"], _ = json.Marshal(sigs)
	out, _ := json.Marshal(obj)
	return out, rows.Err()
}

// CrossSigningKeys returns the users' master and self-signing keys, and the
// requester's own user-signing key.
func (s *Service) CrossSigningKeys(ctx context.Context, requester string, users []string) (master, selfSigning, userSigning map[string]json.RawMessage, err error) {
	master, selfSigning, userSigning = map[string]json.RawMessage{}, map[string]json.RawMessage{}, map[string]json.RawMessage{}
	for _, u := range users {
		for _, t := range []struct {
			typ string
			out map[string]json.RawMessage
		}{{Master, master}, {SelfSigning, selfSigning}, {UserSigning, userSigning}} {
			if t.typ == UserSigning && u != requester {
				continue
			}
			raw, err := s.crossSigningKeyFor(ctx, u, t.typ, requester)
			if err != nil {
				return nil, nil, nil, err
			}
			if raw != nil {
				t.out[u] = raw
			}
		}
	}
	return master, selfSigning, userSigning, nil
}

// SignatureFailure is one rejected signature of /keys/signatures/upload.
type SignatureFailure struct {
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
}

// UploadSignatures verifies and stores signatures the user made: of their own devices
// and master key (with their self-signing key or a device key) and of other users'
// master keys (with their user-signing key). Each object that fails is reported.
func (s *Service) UploadSignatures(ctx context.Context, signer string, objects map[string]map[string]json.RawMessage) (map[string]map[string]SignatureFailure, error) {
	failures := map[string]map[string]SignatureFailure{}
	fail := func(user, key, code, msg string) {
		if failures[user] == nil {
			failures[user] = map[string]SignatureFailure{}
		}
		failures[user][key] = SignatureFailure{ErrCode: code, Error: msg}
	}
	selfKey, err := s.signerKey(ctx, signer, SelfSigning)
	if err != nil {
		return nil, err
	}
	userKey, err := s.signerKey(ctx, signer, UserSigning)
	if err != nil {
		return nil, err
	}
	for targetUser, byKey := range objects {
		for keyID, raw := range byKey {
			var obj struct {
				Signatures map[string]map[string]string `json:"signatures"`
			}
			if json.Unmarshal(raw, &obj) != nil {
				fail(targetUser, keyID, "M_BAD_JSON", "not a signed object")
				continue
			}
			// Which key must have signed it: own device → self-signing key; other
			// user's master key → user-signing key; own master key → any own device.
			var candidates []signerKeyT
			if targetUser == signer {
				if selfKey.pub != nil {
					candidates = append(candidates, selfKey)
				}
				devs, err := s.deviceSigningKeys(ctx, signer)
				if err != nil {
					return nil, err
				}
				candidates = append(candidates, devs...)
			} else if userKey.pub != nil {
				candidates = append(candidates, userKey)
			}
			stored := false
			for _, c := range candidates {
				sig, ok := obj.Signatures[signer][c.id]
				if !ok {
					continue
				}
				if err := gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(c.id), c.pub, raw); err != nil {
					fail(targetUser, keyID, "M_INVALID_SIGNATURE", "signature does not verify")
					stored = true
					break
				}
				if _, err := s.db.Exec(ctx, `INSERT INTO cross_signing_sigs (target_user, target_key, signer, signer_key_id, signature)
					VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user, target_key, signer, signer_key_id) DO UPDATE SET signature = excluded.signature`,
					targetUser, keyID, signer, c.id, sig); err != nil {
					return nil, fmt.Errorf("store signature: %w", err)
				}
				stored = true
				break
			}
			if !stored {
				fail(targetUser, keyID, "M_INVALID_SIGNATURE", "no signature by a key allowed to sign this object")
			}
		}
	}
	if len(objects) > 0 {
		err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
			for u := range objects {
				if err := markDeviceListChange(ctx, tx, u); err != nil {
					return err
				}
			}
			return nil
		})
		for u := range objects {
			s.deviceListChanged(u)
		}
	}
	return failures, err
}

type signerKeyT struct {
	id  string
	pub ed25519.PublicKey
}

func (s *Service) signerKey(ctx context.Context, userID, typ string) (signerKeyT, error) {
	raw, err := s.crossSigningKey(ctx, userID, typ)
	if err != nil || raw == nil {
		return signerKeyT{}, err
	}
	var k crossSigningKey
	json.Unmarshal(raw, &k)
	id, pub, err := k.publicKey()
	if err != nil {
		return signerKeyT{}, nil
	}
	return signerKeyT{id: id, pub: pub}, nil
}

// deviceSigningKeys lists the ed25519 keys of the user's devices.
func (s *Service) deviceSigningKeys(ctx context.Context, userID string) ([]signerKeyT, error) {
	rows, err := s.db.Query(ctx, `SELECT device_id, key_json FROM device_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("device keys of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []signerKeyT
	for rows.Next() {
		var dev, raw string
		if err := rows.Scan(&dev, &raw); err != nil {
			return nil, err
		}
		var dk deviceKeys
		json.Unmarshal([]byte(raw), &dk)
		b64 := dk.Keys["ed25519:"+dev]
		if pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "=")); err == nil && len(pub) == ed25519.PublicKeySize {
			out = append(out, signerKeyT{id: "ed25519:" + dev, pub: pub})
		}
	}
	return out, rows.Err()
}
