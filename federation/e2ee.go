package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// QueryRemoteKeys asks server for its users' keys (/user/keys/query).
func (s *Service) QueryRemoteKeys(ctx context.Context, server string, want map[string][]string) (e2ee.RemoteKeys, error) {
	res, err := s.client.QueryKeys(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), want)
	if err != nil {
		return e2ee.RemoteKeys{}, err
	}
	// Re-read the answer as raw JSON: signatures must reach clients byte for byte.
	raw, err := json.Marshal(res)
	if err != nil {
		return e2ee.RemoteKeys{}, err
	}
	var out e2ee.RemoteKeys
	if err := json.Unmarshal(raw, &out); err != nil {
		return e2ee.RemoteKeys{}, fmt.Errorf("keys from %s: %w", server, err)
	}
	return out, nil
}

// ClaimRemoteKeys claims one-time keys from server (/user/keys/claim).
func (s *Service) ClaimRemoteKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	res, err := s.client.ClaimKeys(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), want)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(res.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	var out map[string]map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("claimed keys from %s: %w", server, err)
	}
	return out, nil
}

// SendToDeviceRemote queues an m.direct_to_device EDU for server.
func (s *Service) SendToDeviceRemote(ctx context.Context, server, sender, evType, messageID string, messages map[string]map[string]json.RawMessage) error {
	return s.sender.queueEDUTo(ctx, []string{server}, spec.MDirectToDevice,
		map[string]any{"sender": sender, "type": evType, "message_id": messageID, "messages": messages})
}

// onDeviceList tells the servers sharing a room with a local user that the user's
// devices or cross-signing keys changed (m.device_list_update): their clients then
// query the keys again.
func (snd *sender) onDeviceList(m *nats.Msg) {
	var n e2ee.Notice
	if json.Unmarshal(m.Data, &n) != nil || !n.DeviceList || !strings.HasSuffix(n.UserID, ":"+snd.s.cfg.ServerName) {
		return
	}
	servers, err := snd.s.deps.Rooms.ServersSharing(snd.ctx, n.UserID)
	if err != nil {
		return
	}
	update := snd.deviceListUpdate(n)
	if err := snd.queueEDUTo(snd.ctx, servers, spec.MDeviceListUpdate, update); err != nil {
		snd.s.log.Warn("queue device list update", "err", err)
	}
}

// deviceListUpdate is the m.device_list_update for a notice: the device that
// changed with its keys and display name (or deleted), and the stream IDs that let
// the receiver notice a missed update (prev_id is the previous stream_id, as
// Synapse sends them). A change of no one device (cross-signing keys) names none.
func (snd *sender) deviceListUpdate(n e2ee.Notice) map[string]any {
	update := map[string]any{"user_id": n.UserID, "device_id": n.DeviceID, "stream_id": n.StreamID, "prev_id": []int64{}, "deleted": n.Deleted}
	if n.PrevID > 0 {
		update["prev_id"] = []int64{n.PrevID}
	}
	if n.DeviceID == "" || n.Deleted {
		return update
	}
	ctx := snd.ctx
	keys, _, err := snd.s.deps.E2EE.QueryKeys(ctx, snd.s.cfg.ServerName, map[string][]string{n.UserID: {n.DeviceID}})
	if err != nil {
		snd.s.log.Warn("device list update: read keys", "user", n.UserID, "err", err)
	} else if k, ok := keys[n.UserID][n.DeviceID]; ok {
		update["keys"] = k
	}
	if localpart, ok := snd.s.deps.Users.LocalpartOf(n.UserID); ok {
		if d, err := snd.s.deps.Users.Device(ctx, localpart, n.DeviceID); err == nil && d.DisplayName != nil {
			update["device_display_name"] = *d.DisplayName
		}
	}
	return update
}

// receiveE2EEEDU applies the key-related EDUs of another server's users.
func (s *Service) receiveE2EEEDU(ctx context.Context, origin string, edu gomatrixserverlib.EDU) (bool, error) {
	switch edu.Type {
	case spec.MDirectToDevice:
		var c struct {
			Sender    string                                `json:"sender"`
			Type      string                                `json:"type"`
			MessageID string                                `json:"message_id"`
			Messages  map[string]map[string]json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(edu.Content, &c); err != nil {
			return true, err
		}
		return true, s.deps.E2EE.DeliverRemoteToDevice(ctx, origin, c.Sender, c.Type, c.MessageID, c.Messages, s.cfg.ServerName)
	case spec.MDeviceListUpdate, "m.signing_key_update":
		var c struct {
			UserID      string          `json:"user_id"`
			DeviceID    string          `json:"device_id"`
			DisplayName string          `json:"device_display_name"`
			StreamID    int64           `json:"stream_id"`
			PrevID      []int64         `json:"prev_id"`
			Deleted     bool            `json:"deleted"`
			Keys        json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(edu.Content, &c); err != nil {
			return true, err
		}
		if !strings.HasSuffix(c.UserID, ":"+origin) {
			return true, fmt.Errorf("%s cannot speak for %s's devices", origin, c.UserID)
		}
		// Only users sharing a room with this server's are tracked (as Synapse
		// does): updates about anyone else would each leave rows behind, for
		// as many users as the origin cares to name.
		if shares, err := s.mayShareRoom(ctx, c.UserID); err != nil || !shares {
			return true, err
		}
		if edu.Type == "m.signing_key_update" {
			return true, s.deps.E2EE.SigningKeysChanged(ctx, c.UserID)
		}
		return true, s.deps.E2EE.ApplyDeviceListUpdate(ctx, e2ee.DeviceListUpdate{
			UserID: c.UserID, DeviceID: c.DeviceID, DisplayName: c.DisplayName,
			StreamID: c.StreamID, PrevID: c.PrevID, Deleted: c.Deleted, Keys: c.Keys,
		})
	}
	return false, nil
}

// userDevices serves GET /user/devices/{userId}: a local user's devices with their
// keys and cross-signing keys, which other servers fetch to track the device list.
func (s *Service) userDevices(r *fedRequest) (any, error) {
	ctx := r.Context()
	userID := r.Vars["userId"]
	localpart, ok := s.deps.Users.LocalpartOf(userID)
	if !ok {
		return nil, mxerror.New(mxerror.InvalidParam, "%s is not a user of this server", userID)
	}
	devices, err := s.deps.Users.Devices(ctx, localpart)
	if err != nil {
		return nil, err
	}
	keys, _, err := s.deps.E2EE.QueryKeys(ctx, s.cfg.ServerName, map[string][]string{userID: nil})
	if err != nil {
		return nil, err
	}
	pos, err := s.deps.E2EE.DeviceListPosition(ctx)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, d := range devices {
		dev := map[string]any{"device_id": d.DeviceID}
		if d.DisplayName != nil {
			dev["device_display_name"] = *d.DisplayName
		}
		if k, ok := keys[userID][d.DeviceID]; ok {
			dev["keys"] = k
		}
		out = append(out, dev)
	}
	res := map[string]any{"user_id": userID, "stream_id": pos, "devices": out}
	master, selfSigning, _, err := s.deps.E2EE.CrossSigningKeys(ctx, "", []string{userID})
	if err != nil {
		return nil, err
	}
	if k, ok := master[userID]; ok {
		res["master_key"] = k
	}
	if k, ok := selfSigning[userID]; ok {
		res["self_signing_key"] = k
	}
	return res, nil
}

// UserDevices fetches another server's user's device list (GET /user/devices),
// the keys kept as the server sent them, byte for byte: clients check their
// signatures.
func (s *Service) UserDevices(ctx context.Context, userID string) (e2ee.RemoteDeviceList, error) {
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return e2ee.RemoteDeviceList{}, fmt.Errorf("invalid user ID %q", userID)
	}
	req := fclient.NewFederationRequest("GET", spec.ServerName(s.cfg.ServerName), spec.ServerName(server),
		"/_matrix/federation/v1/user/devices/"+url.PathEscape(userID))
	if err := req.Sign(spec.ServerName(s.cfg.ServerName), gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey); err != nil {
		return e2ee.RemoteDeviceList{}, err
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		return e2ee.RemoteDeviceList{}, err
	}
	var res struct {
		UserID   string `json:"user_id"`
		StreamID int64  `json:"stream_id"`
		Devices  []struct {
			DeviceID    string          `json:"device_id"`
			DisplayName string          `json:"device_display_name"`
			Keys        json.RawMessage `json:"keys"`
		} `json:"devices"`
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
	}
	if err := s.client.DoRequestAndParseResponse(ctx, hr, &res); err != nil {
		return e2ee.RemoteDeviceList{}, err
	}
	if res.UserID != userID {
		return e2ee.RemoteDeviceList{}, fmt.Errorf("%s answered for %q, not %s", server, res.UserID, userID)
	}
	out := e2ee.RemoteDeviceList{StreamID: res.StreamID, Devices: map[string]json.RawMessage{}, Master: res.Master, SelfSigning: res.SelfSigning}
	for _, d := range res.Devices {
		keys := string(d.Keys)
		if !gjson.Valid(keys) || !gjson.Parse(keys).IsObject() {
			keys = "{}"
		}
		if d.DisplayName != "" {
			keys, _ = sjson.Set(keys, "unsigned.device_display_name", d.DisplayName)
		}
		out.Devices[d.DeviceID] = json.RawMessage(keys)
	}
	return out, nil
}

// SharesRoom reports whether a local user shares a room with userID.
func (s *Service) SharesRoom(ctx context.Context, userID string) (bool, error) {
	return s.deps.Rooms.SharesRoomWithLocal(ctx, userID)
}

// mayShareRoom reports whether another server's user shares a room with this
// server's, or may (rooms.MayShareRoomWithLocal), or is of a server this node is
// joining a room through: that server sends its users' presence before the join
// is stored here.
func (s *Service) mayShareRoom(ctx context.Context, userID string) (bool, error) {
	if shares, err := s.deps.Rooms.MayShareRoomWithLocal(ctx, userID); err != nil || shares {
		return shares, err
	}
	_, server, _ := strings.Cut(userID, ":")
	return s.joins.has(server, time.Now()), nil
}

// recentJoins remembers the servers this node joined rooms through in the last
// joinGrace. The zero value is ready to use. (Several nodes each remember their
// own joins: an EDU arriving at another node during a join is dropped, as it
// was before it could be checked at all; the next presence change carries it.)
type recentJoins struct {
	mu    sync.Mutex
	until map[string]time.Time // guarded by mu
}

// joinGrace is how long after a join through a server its users count as
// sharing a room, before the join's state is stored.
const joinGrace = 2 * time.Minute

// maxRecentJoins bounds recentJoins; local users' joins fill it, through
// servers they name.
const maxRecentJoins = 1000

func (r *recentJoins) add(server string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.until == nil {
		r.until = map[string]time.Time{}
	}
	if len(r.until) >= maxRecentJoins {
		for srv, t := range r.until {
			if now.After(t) {
				delete(r.until, srv)
			}
		}
		for srv := range r.until {
			if len(r.until) < maxRecentJoins {
				break
			}
			delete(r.until, srv)
		}
	}
	r.until[server] = now.Add(joinGrace)
}

func (r *recentJoins) has(server string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.until[server]
	return ok && now.Before(t)
}
