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
	failures := map[string]any{}
	byServer := map[string]map[string][]string{}
	for u, devices := range want {
		_, server, ok := strings.Cut(u, ":")
		if !ok {
			continue
		}
		if byServer[server] == nil {
			byServer[server] = map[string][]string{}
		}
		byServer[server][u] = devices
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, users := range byServer {
		if s.remote == nil {
			failures[server] = map[string]string{"status": "503", "message": "federation is off on this server"}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, remoteTimeout)
			defer cancel()
			res, err := s.remote.QueryRemoteKeys(qctx, server, users)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[server] = map[string]string{"status": "503", "message": err.Error()}
				return
			}
			// Only what the server may speak for: its own users.
			for u, devs := range res.DeviceKeys {
				if _, ok := users[u]; ok {
					out.DeviceKeys[u] = devs
				}
			}
			for u, k := range res.Master {
				if _, ok := users[u]; ok {
					out.Master[u] = k
				}
			}
			for u, k := range res.SelfSigning {
				if _, ok := users[u]; ok {
					out.SelfSigning[u] = k
				}
			}
		}()
	}
	wg.Wait()
	return out, failures
}

// ClaimRemote claims other servers' users' one-time keys, concurrently per server.
func (s *Service) ClaimRemote(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, map[string]any) {
	out := map[string]map[string]map[string]json.RawMessage{}
	failures := map[string]any{}
	byServer := map[string]map[string]map[string]string{}
	for u, devices := range want {
		if _, server, ok := strings.Cut(u, ":"); ok {
			if byServer[server] == nil {
				byServer[server] = map[string]map[string]string{}
			}
			byServer[server][u] = devices
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, users := range byServer {
		if s.remote == nil {
			failures[server] = map[string]string{"status": "503", "message": "federation is off on this server"}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, remoteTimeout)
			defer cancel()
			res, err := s.remote.ClaimRemoteKeys(qctx, server, users)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[server] = map[string]string{"status": "503", "message": err.Error()}
				return
			}
			for u, devs := range res {
				if _, ok := users[u]; ok {
					out[u] = devs
				}
			}
		}()
	}
	wg.Wait()
	return out, failures
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
