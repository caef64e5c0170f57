package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/mxerror"
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

// maxRememberedKeys bounds keyStore.mem: every server that signs a request adds
// its keys, and anyone can name a new server. Past the bound the map starts
// afresh, which costs one database read per key in use.
const maxRememberedKeys = 10_000

func (k *keyStore) remember(req gomatrixserverlib.PublicKeyLookupRequest, res gomatrixserverlib.PublicKeyLookupResult) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.mem == nil || len(k.mem) >= maxRememberedKeys {
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

// A notary request names at most maxNotaryServers servers and maxNotaryKeys key
// IDs in all: each server named may cost an outbound request. Past them the
// answer is 413 M_TOO_LARGE, as conduwuit answers an oversized batch: the
// request is refused for its size, and unlike M_LIMIT_EXCEEDED (429) that does
// not invite the asker to retry the same request later. The spec sets no bound;
// servers ask for the few servers of one event or transaction at a time
// (Synapse batches a key ring's lookups, rarely past a few dozen).
const (
	maxNotaryServers = 100
	maxNotaryKeys    = 500
)

// keyLimited limits the key endpoints per remote address, as authed limits the
// rest of federation per origin: they are asked unsigned, so the address is all
// there is to go by. An IPv6 address counts by its /64, which one host usually
// holds whole.
func (s *Service) keyLimited(h httpapi.Handler) httpapi.Handler {
	return func(r *httpapi.Request) (any, error) {
		if s.keyLimiter != nil {
			if ok, wait := s.keyLimiter.Allow(addressKey(r.IP)); !ok {
				return nil, &mxerror.Error{Code: mxerror.LimitExceeded, Message: "too many key requests from " + r.IP,
					RetryAfterMs: wait.Milliseconds() + 1}
			}
		}
		return h(r)
	}
}

// addressKey is the rate limit key of a remote address: the address itself, or
// its /64 for IPv6.
func addressKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.Unmap().Is4() {
		return ip
	}
	return netip.PrefixFrom(addr, 64).Masked().String()
}

// notaryQuery answers /_matrix/key/v2/query: the keys of the servers asked for, as
// each server signed them, countersigned by this one. A key is answered from the
// documents kept here when one valid long enough (minimum_valid_until_ts) lists
// it, else the server is asked again; a key the server no longer lists is still
// answered with the document that did (an origin cannot make us forget it).
func (s *Service) notaryQuery(r *httpapi.Request) (any, error) {
	ctx := r.Context()
	type want struct {
		keyID    string
		minValid int64
	}
	wanted := map[string][]want{}
	if server := r.Vars["serverName"]; server != "" {
		minValid, _ := strconv.ParseInt(r.URL.Query().Get("minimum_valid_until_ts"), 10, 64)
		wanted[server] = []want{{r.Vars["keyID"], minValid}}
	} else {
		var body struct {
			ServerKeys map[string]map[string]struct {
				MinValid int64 `json:"minimum_valid_until_ts"`
			} `json:"server_keys"`
		}
		if err := r.Decode(&body); err != nil {
			return nil, err
		}
		keys := 0
		for _, ids := range body.ServerKeys {
			keys += len(ids)
		}
		if len(body.ServerKeys) > maxNotaryServers || keys > maxNotaryKeys {
			return nil, mxerror.New(mxerror.TooLarge, "a key query names at most %d servers and %d key IDs; this one names %d and %d",
				maxNotaryServers, maxNotaryKeys, len(body.ServerKeys), keys)
		}
		for server, ids := range body.ServerKeys {
			wanted[server] = []want{}
			for id, c := range ids {
				wanted[server] = append(wanted[server], want{id, c.MinValid})
			}
			if len(ids) == 0 {
				wanted[server] = []want{{"", 0}}
			}
		}
	}
	out := []json.RawMessage{}
	for server, keys := range wanted {
		docs := map[string]bool{}
		if server == s.cfg.ServerName {
			doc, err := s.serverKeys()
			if err != nil {
				return nil, err
			}
			docs[string(doc)] = true
		} else {
			fetched := false
			for _, k := range keys {
				doc, validUntil, err := s.storedKeyDoc(ctx, server, k.keyID)
				if err == nil && validUntil >= k.minValid {
					docs[string(doc)] = true
					continue
				}
				if !fetched {
					fetched = true
					// Kept so the notary can vouch for it later (when the
					// server is down or has dropped the key), but bounded:
					// see keepNotaryDoc.
					if keys, err := s.fetchServerKeys(ctx, spec.ServerName(server), s.keepNotaryDoc(ctx, server, maxNotaryOnlyServers)); err == nil {
						if k.keyID == "" {
							docs[string(keys.Raw)] = true
							continue
						}
						if _, ok := keys.VerifyKeys[gomatrixserverlib.KeyID(k.keyID)]; ok {
							docs[string(keys.Raw)] = true
							continue
						}
						if _, ok := keys.OldVerifyKeys[gomatrixserverlib.KeyID(k.keyID)]; ok {
							docs[string(keys.Raw)] = true
							continue
						}
					}
				}
				// What is kept now, fresh or not: better than nothing for a
				// server that is down (the asker judges the validity).
				if doc, _, err := s.storedKeyDoc(ctx, server, k.keyID); err == nil {
					docs[string(doc)] = true
				}
			}
		}
		for doc := range docs {
			signed, err := gomatrixserverlib.SignJSON(s.cfg.ServerName, gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey, []byte(doc))
			if err != nil {
				return nil, err
			}
			out = append(out, signed)
		}
	}
	return map[string]any{"server_keys": out}, nil
}

// maxNotaryOnlyServers bounds the servers whose key documents the notary keeps
// only because someone asked it about them: anyone may name servers (and a
// wildcard DNS name makes servers cheap), so past this many the notary still
// answers for new ones but keeps nothing of them.
const maxNotaryOnlyServers = 10_000

// keepNotaryDoc reports whether a key document of server, fetched to answer a
// notary query, is kept: always for a server this one fetched keys of for its own
// checks or whose documents it keeps already (they stay current), and for others
// while fewer than limit servers are kept that way. Keeping them is what lets the
// notary answer for a key once its server is gone or no longer lists it (Sytest's
// "Key notary server should return an expired key if it can't find any others").
func (s *Service) keepNotaryDoc(ctx context.Context, server string, limit int) bool {
	var one int
	err := s.deps.DB.QueryRow(ctx, `SELECT 1 FROM server_keys WHERE server_name = $1
		UNION ALL SELECT 1 FROM server_key_docs WHERE server_name = $1 LIMIT 1`, server).Scan(&one)
	if err == nil {
		return true
	}
	var n int
	if err := s.deps.DB.QueryRow(ctx, `SELECT COUNT(DISTINCT server_name) FROM server_key_docs
		WHERE server_name NOT IN (SELECT server_name FROM server_keys)`).Scan(&n); err != nil {
		s.log.Warn("count notary-only key documents", "err", err)
		return false
	}
	return n < limit
}

// keyFetcher asks servers for their own keys, keeping each document as signed
// (for notary answers once the server is gone), then asks the trusted key
// servers for what is still missing.
type keyFetcher struct {
	s        *Service
	notaries []*notary
}

func (f *keyFetcher) FetcherName() string { return "direct, then trusted key servers" }

func (f *keyFetcher) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	servers := map[spec.ServerName]bool{}
	for req := range requests {
		servers[req.ServerName] = true
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for server := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			keys, err := f.s.fetchServerKeys(ctx, server, true)
			if err != nil {
				f.s.log.Debug("server keys unreachable", "server", server, "err", err)
				return
			}
			mu.Lock()
			addKeys(results, keys)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, n := range f.notaries {
		missing := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
		for req, ts := range requests {
			if _, ok := results[req]; !ok {
				missing[req] = ts
			}
		}
		if len(missing) == 0 {
			break
		}
		got, err := n.fetch(ctx, f.s, missing)
		if err != nil {
			f.s.log.Warn("trusted key server failed", "server", n.name, "err", err)
			continue
		}
		for req, res := range got {
			if _, asked := missing[req]; asked {
				results[req] = res
			}
		}
	}
	return results, nil
}

// fetchServerKeys asks a server for its key document, checks it is self-signed
// and current, and, if keep, stores it as signed.
func (s *Service) fetchServerKeys(ctx context.Context, server spec.ServerName, keep bool) (gomatrixserverlib.ServerKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	keys, err := s.client.GetServerKeys(ctx, server)
	if err != nil {
		return keys, err
	}
	if checks, _ := gomatrixserverlib.CheckKeys(server, time.Unix(0, 0), keys); !checks.AllChecksOK {
		return keys, fmt.Errorf("key document of %s failed its checks", server)
	}
	if !keep {
		return keys, nil
	}
	ids := make([]gomatrixserverlib.KeyID, 0, len(keys.VerifyKeys)+len(keys.OldVerifyKeys))
	for id := range keys.VerifyKeys {
		ids = append(ids, id)
	}
	for id := range keys.OldVerifyKeys {
		ids = append(ids, id)
	}
	for _, id := range ids {
		if _, err := s.deps.DB.Exec(ctx, `INSERT INTO server_key_docs (server_name, key_id, doc, valid_until_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (server_name, key_id) DO UPDATE SET doc = excluded.doc, valid_until_ts = excluded.valid_until_ts
			WHERE excluded.valid_until_ts >= server_key_docs.valid_until_ts`,
			string(server), string(id), string(keys.Raw), int64(keys.ValidUntilTS)); err != nil {
			s.log.Warn("storing a key document", "server", server, "err", err)
		}
	}
	return keys, nil
}

// storedKeyDoc is the latest kept key document of a server listing keyID (any
// key when empty), with its validity.
func (s *Service) storedKeyDoc(ctx context.Context, server, keyID string) (json.RawMessage, int64, error) {
	var doc string
	var validUntil int64
	err := s.deps.DB.QueryRow(ctx, `SELECT doc, valid_until_ts FROM server_key_docs WHERE server_name = $1 AND (key_id = $2 OR $2 = '')
		ORDER BY valid_until_ts DESC LIMIT 1`, server, keyID).Scan(&doc, &validUntil)
	if err != nil {
		return nil, 0, err
	}
	return json.RawMessage(doc), validUntil, nil
}

// addKeys adds a key document's current and old keys to results.
func addKeys(results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, keys gomatrixserverlib.ServerKeys) {
	for id, key := range keys.VerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: key, ValidUntilTS: keys.ValidUntilTS, ExpiredTS: gomatrixserverlib.PublicKeyNotExpired,
		}
	}
	for id, key := range keys.OldVerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: key.VerifyKey, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid, ExpiredTS: key.ExpiredTS,
		}
	}
}

// notary is a trusted key server. Its answers must carry its signature with one
// of keys; configured without keys, it is asked for them once and trusted.
type notary struct {
	name spec.ServerName
	mu   sync.Mutex
	keys map[gomatrixserverlib.KeyID]ed25519.PublicKey
}

func newNotary(ks config.KeyServer) *notary {
	n := &notary{name: spec.ServerName(ks.ServerName), keys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{}}
	for id, key := range ks.VerifyKeys {
		raw, _ := base64.RawStdEncoding.DecodeString(strings.TrimRight(key, "=")) // checked by config.Validate
		n.keys[gomatrixserverlib.KeyID(id)] = raw
	}
	return n
}

func (n *notary) fetch(ctx context.Context, s *Service, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.keys) == 0 {
		own, err := s.fetchServerKeys(ctx, n.name, true)
		if err != nil {
			return nil, fmt.Errorf("its own keys: %w", err)
		}
		for id, key := range own.VerifyKeys {
			n.keys[id] = ed25519.PublicKey(key.Key)
		}
		s.log.Warn("trusting a key server's keys on first use; set verify_keys to pin them", "server", n.name)
	}
	fetcher := gomatrixserverlib.PerspectiveKeyFetcher{PerspectiveServerName: n.name, PerspectiveServerKeys: n.keys, Client: s.client}
	return fetcher.FetchKeys(ctx, requests)
}
