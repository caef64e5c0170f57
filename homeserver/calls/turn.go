package calls

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/turn/v4"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/outbound"
)

// Realm is the TURN realm of the embedded server.
const Realm = "hongyan"

// TURNServer is the embedded TURN/STUN server. It accepts only credentials the
// Service issued, relays from turn.embedded's port range, caps each user's
// allocations and refuses to relay into non-public networks.
type TURNServer struct {
	server *turn.Server
	conn   net.PacketConn
	filter *PeerFilter
	quota  int

	mu sync.Mutex
	// allocations counts each user's live allocations. Guarded by mu.
	allocations map[string]int
}

// StartTURN listens on turn.embedded.listen (addr overrides it when not
// empty; tests pass 127.0.0.1:0) and serves TURN until Close.
func (s *Service) StartTURN(ctx context.Context, cfg config.Config, addr string) (*TURNServer, error) {
	e := cfg.TURN.Embedded
	if addr == "" {
		addr = e.Listen
	}
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("turn: listen %s: %w", addr, err)
	}
	relayIP := net.ParseIP(e.RelayAddress)
	if relayIP == nil {
		relayIP = conn.LocalAddr().(*net.UDPAddr).IP
		if relayIP.IsUnspecified() {
			relayIP = net.IPv4(127, 0, 0, 1)
		}
	}
	allow, _ := outbound.ParsePrefixes(cfg.TURN.AllowPeerCIDRs) // validated
	relayAddr, _ := netip.AddrFromSlice(relayIP)
	t := &TURNServer{conn: conn, quota: e.UserQuota, allocations: map[string]int{},
		filter: &PeerFilter{Relay: relayAddr.Unmap(), Allow: allow}}
	if t.quota <= 0 {
		t.quota = 10
	}
	t.server, err = turn.NewServer(turn.ServerConfig{
		Realm: Realm,
		AuthHandler: func(username, realm string, _ net.Addr) ([]byte, bool) {
			_, password, ok := s.check(username, time.Now())
			if !ok {
				return nil, false
			}
			return turn.GenerateAuthKey(username, realm, password), true
		},
		QuotaHandler: func(username, _ string, _ net.Addr) bool {
			return t.underQuota(username)
		},
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(_, _ net.Addr, _, username, _ string, _ net.Addr, _ int) {
				t.count(username, +1)
			},
			OnAllocationDeleted: func(_, _ net.Addr, _, username, _ string) {
				t.count(username, -1)
			},
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorPortRange{
				RelayAddress: relayIP, Address: relayIP.String(),
				MinPort: uint16(e.RelayMinPort), MaxPort: uint16(e.RelayMaxPort),
			},
			PermissionHandler: func(client net.Addr, peer net.IP) bool {
				ok := t.filter.Allowed(peer)
				if !ok {
					slog.Info("turn: peer refused", "client", client.String(), "peer", peer.String())
				}
				return ok
			},
		}},
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("turn: start: %w", err)
	}
	return t, nil
}

// Addr is the UDP address the server listens on.
func (t *TURNServer) Addr() net.Addr { return t.conn.LocalAddr() }

// Filter is the peer filter the permission handler asks.
func (t *TURNServer) Filter() *PeerFilter { return t.filter }

// Close stops the server and frees its allocations.
func (t *TURNServer) Close() error { return t.server.Close() }

// Allocations is how many allocations user holds now.
func (t *TURNServer) Allocations(userID string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.allocations[userID]
}

func (t *TURNServer) underQuota(username string) bool {
	user := userOf(username)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.allocations[user] < t.quota
}

func (t *TURNServer) count(username string, delta int) {
	user := userOf(username)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.allocations[user] += delta; t.allocations[user] <= 0 {
		delete(t.allocations, user)
	}
}

// userOf is the user ID of a TURN username "expiry:userID": the quota is per
// user, not per credential, so fetching fresh credentials does not reset it.
func userOf(username string) string {
	for i := 0; i < len(username); i++ {
		if username[i] == ':' {
			return username[i+1:]
		}
	}
	return username
}

// PeerFilter decides which peers the relay may send to, like coturn's
// denied-peer-ip with allowed-peer-ip exceptions: public addresses, the
// server's own relay address (two clients of this server on one host), and
// Allow; never other loopback, private, link-local, multicast or unspecified
// addresses, so TURN is no way into the operator's network.
type PeerFilter struct {
	Relay netip.Addr
	Allow []netip.Prefix
}

// Allowed reports whether the relay may send to peer.
func (f *PeerFilter) Allowed(peer net.IP) bool {
	a, ok := netip.AddrFromSlice(peer)
	if !ok {
		return false
	}
	a = a.Unmap()
	if a == f.Relay {
		return true
	}
	return outbound.Allowed(a, f.Allow, false)
}
