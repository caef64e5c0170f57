package federation

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/httpapi"
)

// keyStore caches server signing keys in SQL: the KeyDatabase of the key ring, so
// that a key is fetched from its server once and survives restarts.
type keyStore struct {
	db *storage.DB

	// mem holds keys already read or stored: every PDU's signature check asks for
	// its server's key, and a round trip each would dominate receiving.
	mu  sync.Mutex
	mem map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

func (k *keyStore) FetcherName() string { return "database" }

// FetchKeys returns the stored keys among the requests.
func (k *keyStore) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	k.mu.Lock()
	for req := range requests {
		if res, ok := k.mem[req]; ok {
			out[req] = res
		}
	}
	k.mu.Unlock()
	for req := range requests {
		if _, ok := out[req]; ok {
			continue
		}
		var key string
		var validUntil, expired int64
		err := k.db.QueryRow(ctx, `SELECT public_key, valid_until_ts, expired_ts FROM server_keys WHERE server_name = $1 AND key_id = $2`,
			string(req.ServerName), string(req.KeyID)).Scan(&key, &validUntil, &expired)
		if err != nil {
			continue // not stored (or unreadable): the next fetcher asks the server
		}
		raw, err := base64.RawStdEncoding.DecodeString(key)
		if err != nil {
			continue
		}
		res := gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(raw)},
			ValidUntilTS: spec.Timestamp(validUntil),
			ExpiredTS:    spec.Timestamp(expired),
		}
		out[req] = res
		k.remember(req, res)
	}
	return out, nil
}

// StoreKeys records fetched keys, keeping the later validity of two answers.
func (k *keyStore) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	for req, res := range results {
		if _, err := k.db.Exec(ctx, `INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
			valid_until_ts = CASE WHEN excluded.valid_until_ts > server_keys.valid_until_ts THEN excluded.valid_until_ts ELSE server_keys.valid_until_ts END,
			expired_ts = excluded.expired_ts`,
			string(req.ServerName), string(req.KeyID), base64.RawStdEncoding.EncodeToString(res.Key),
			int64(res.ValidUntilTS), int64(res.ExpiredTS)); err != nil {
			return fmt.Errorf("store key %s of %s: %w", req.KeyID, req.ServerName, err)
		}
		k.mu.Lock()
		delete(k.mem, req) // re-read: the row keeps the later of two validities
		k.mu.Unlock()
	}
	return nil
}

func (k *keyStore) remember(req gomatrixserverlib.PublicKeyLookupRequest, res gomatrixserverlib.PublicKeyLookupResult) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.mem == nil || len(k.mem) > 10_000 {
		k.mem = map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	}
	k.mem[req] = res
}

// serverKeys is this server's signed key document, valid for keyValidity.
func (s *Service) serverKeys() (json.RawMessage, error) {
	keys := gomatrixserverlib.ServerKeyFields{
		ServerName:   spec.ServerName(s.cfg.ServerName),
		ValidUntilTS: spec.AsTimestamp(time.Now().Add(keyValidity)),
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			gomatrixserverlib.KeyID(s.cfg.Key.ID): {Key: spec.Base64Bytes(s.cfg.Key.Public())},
		},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	}
	raw, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(s.cfg.ServerName, gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey, raw)
}

// keyValidity is how long others may cache our key before asking again.
const keyValidity = 7 * 24 * time.Hour

func (s *Service) getServerKeys(*httpapi.Request) (any, error) {
	return s.serverKeys()
}

// notaryQuery answers /_matrix/key/v2/query: the keys of the servers asked for, as
// each server signed them, countersigned by this one.
func (s *Service) notaryQuery(r *httpapi.Request) (any, error) {
	want := map[string][]string{}
	if server := r.Vars["serverName"]; server != "" {
		want[server] = nil
	} else {
		var body struct {
			ServerKeys map[string]map[string]json.RawMessage `json:"server_keys"`
		}
		if err := r.Decode(&body); err != nil {
			return nil, err
		}
		for server, ids := range body.ServerKeys {
			for id := range ids {
				want[server] = append(want[server], id)
			}
			if _, ok := want[server]; !ok {
				want[server] = nil
			}
		}
	}
	out := []json.RawMessage{}
	for server := range want {
		var doc json.RawMessage
		if server == s.cfg.ServerName {
			var err error
			if doc, err = s.serverKeys(); err != nil {
				return nil, err
			}
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			keys, err := s.client.GetServerKeys(ctx, spec.ServerName(server))
			cancel()
			if err != nil {
				continue // unreachable servers are left out, as the spec allows
			}
			if doc, err = json.Marshal(keys); err != nil {
				continue
			}
		}
		signed, err := gomatrixserverlib.SignJSON(s.cfg.ServerName, gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, signed)
	}
	return map[string]any{"server_keys": out}, nil
}
