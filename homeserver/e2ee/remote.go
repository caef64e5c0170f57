package e2ee

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// Remote reaches the keys and devices of other servers' users. The federation
// front-end provides it (SetRemote), so this package never imports a front-end.
type Remote interface {
	// QueryRemoteKeys asks server for its users' device and cross-signing keys.
	QueryRemoteKeys(ctx context.Context, server string, want map[string][]string) (RemoteKeys, error)
	// ClaimRemoteKeys claims one-time keys of server's users' devices.
	ClaimRemoteKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// SendToDeviceRemote queues to-device messages for server's users, durably.
	SendToDeviceRemote(ctx context.Context, server, sender, evType, messageID string, messages map[string]map[string]json.RawMessage) error
	// UserDevices fetches another server's user's whole device list.
	UserDevices(ctx context.Context, userID string) (RemoteDeviceList, error)
	// SharesRoom reports whether a local user shares a room with another server's
	// user: only then do that user's device list updates reach this server.
	SharesRoom(ctx context.Context, userID string) (bool, error)
}

// RemoteKeys is another server's answer to a key query.
type RemoteKeys struct {
	DeviceKeys  map[string]map[string]json.RawMessage `json:"device_keys"`
	Master      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigning map[string]json.RawMessage            `json:"self_signing_keys"`
}

// SetRemote installs the way to reach other servers' users.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// remoteTimeout bounds how long a query waits for other servers; the slow ones are
// reported in failures rather than holding the client up.
const remoteTimeout = 10 * time.Second

// QueryRemote asks the users' servers (concurrently) for their keys. Servers that
// fail or are not reachable are reported in failures by name.
func (s *Service) QueryRemote(ctx context.Context, want map[string][]string) (RemoteKeys, map[string]any) {
	out := RemoteKeys{DeviceKeys: map[string]map[string]json.RawMessage{}, Master: map[string]json.RawMessage{}, SelfSigning: map[string]json.RawMessage{}}
	var mu sync.Mutex
	// Users sharing a room are answered from their kept device lists (fetched
	// whole when needed, a few at a time); the rest ask their servers.
	live := map[string][]string{}
	if s.remote != nil {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for user, devices := range want {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				keys, master, selfSigning, ok := s.cachedOrFetched(ctx, user, devices)
				mu.Lock()
				defer mu.Unlock()
				if !ok {
					live[user] = devices
					return
				}
				out.DeviceKeys[user] = keys
				if master != nil {
					out.Master[user] = master
				}
				if selfSigning != nil {
					out.SelfSigning[user] = selfSigning
				}
			}()
		}
		wg.Wait()
	} else {
		live = want
	}
	failures := eachServer(ctx, s.remote != nil, live, func(ctx context.Context, server string, users map[string][]string) error {
		res, err := s.remote.QueryRemoteKeys(ctx, server, users)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		// Only what the server may speak for: its own users.
		mergeFor(users, out.DeviceKeys, res.DeviceKeys)
		mergeFor(users, out.Master, res.Master)
		mergeFor(users, out.SelfSigning, res.SelfSigning)
		return nil
	})
	return out, failures
}

// ClaimRemote claims other servers' users' one-time keys, concurrently per server.
func (s *Service) ClaimRemote(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, map[string]any) {
	out := map[string]map[string]map[string]json.RawMessage{}
	var mu sync.Mutex
	failures := eachServer(ctx, s.remote != nil, want, func(ctx context.Context, server string, users map[string]map[string]string) error {
		res, err := s.remote.ClaimRemoteKeys(ctx, server, users)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		mergeFor(users, out, res)
		return nil
	})
	return out, failures
}

// eachServer groups a request by the users' servers and calls ask for each server
// concurrently, each bounded by remoteTimeout; the servers that fail (or all, when
// federation is off) are returned as the spec's failures.
func eachServer[V any](ctx context.Context, federating bool, want map[string]V, ask func(ctx context.Context, server string, users map[string]V) error) map[string]any {
	byServer := map[string]map[string]V{}
	for u, v := range want {
		if _, server, ok := strings.Cut(u, ":"); ok {
			if byServer[server] == nil {
				byServer[server] = map[string]V{}
			}
			byServer[server][u] = v
		}
	}
	failures := map[string]any{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, users := range byServer {
		if !federating {
			failures[server] = map[string]string{"status": "503", "message": "federation is off on this server"}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, remoteTimeout)
			defer cancel()
			if err := ask(qctx, server, users); err != nil {
				mu.Lock()
				failures[server] = map[string]string{"status": "503", "message": err.Error()}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failures
}

// mergeFor copies into dst the entries of src for the users asked about.
func mergeFor[V, W any](asked map[string]V, dst, src map[string]W) {
	for u, w := range src {
		if _, ok := asked[u]; ok {
			dst[u] = w
		}
	}
}

// DeliverRemoteToDevice queues to-device messages another server sent for local
// users, once per message ID.
func (s *Service) DeliverRemoteToDevice(ctx context.Context, origin, sender, evType, messageID string, messages map[string]map[string]json.RawMessage, serverName string) error {
	if !strings.HasSuffix(sender, ":"+origin) {
		return fmt.Errorf("%s cannot send to-device messages for %s", origin, sender)
	}
	local := map[string]map[string]json.RawMessage{}
	for u, devs := range messages {
		if strings.HasSuffix(u, ":"+serverName) {
			local[u] = devs
		}
	}
	return s.SendToDevice(ctx, sender, "federation:"+origin, messageID, evType, local, serverName)
}

// RemoteDeviceListChanged records that another server's user changed devices or
// keys, so local users sharing a room with them see it in sync's device_lists.
func (s *Service) RemoteDeviceListChanged(ctx context.Context, userID string) error {
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return markDeviceListChange(ctx, tx, userID) })
	if err == nil {
		s.notify(userID) // wakes syncs; not announced further
	}
	return err
}
