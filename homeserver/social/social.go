// Package social is friends and groups, expressed in plain Matrix so that a native
// app, an Element user and a user on another server share them:
//
//   - A friend request is a direct-message room (is_direct) whose create event
//     carries the im.hongyan.friend_request marker (requester, target, message),
//     and an invite of the target with the message as the invite's reason. An
//     Element user sees a DM invite; accepting is joining it. Accepted friends are
//     recorded in both users' m.direct and im.hongyan.friends account data.
//     Blocking is m.ignored_user_list.
//   - A group is a private room whose create event carries the im.hongyan.group
//     marker, with an im.hongyan.group state event naming the owner (power 100)
//     and whether the group was dissolved. Every group operation is a membership or
//     state change any Matrix client understands.
//
// Every rule lives here; the client API, the native protocol and plain Matrix
// clients reach the same state. What happens in a room on the other side (a join
// by an Element user, an answer from another server) is seen by a consumer of the
// events stream (consumer.go), which keeps the request table and the account data
// of local users current and publishes a Notice for native pushes.
package social

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Marker and account data types.
const (
	// FriendRequestMarker is the key, in a request room's create content, of
	// {"requester", "target", "message"}.
	FriendRequestMarker = "im.hongyan.friend_request"
	// GroupMarker is the key in a group's create content ({"version": 1}) and the
	// type of its state event ({"owner", "dissolved"}).
	GroupMarker = "im.hongyan.group"
	// FriendsType is the account data listing a user's friends:
	// {"friends": {"@user:server": {"room_id", "since"}}}.
	FriendsType = "im.hongyan.friends"
	// DirectType is the spec's m.direct: {"@user:server": ["!room"]}.
	DirectType = "m.direct"
	// IgnoredType is the spec's m.ignored_user_list: {"ignored_users": {"@u:s": {}}}.
	IgnoredType = "m.ignored_user_list"
)

// Subject is the bus subject a Notice is published on.
const Subject = "hongyan.social"

// Notice kinds.
const (
	KindFriendRequest   = "friend_request"   // From asks UserID to be friends (RoomID, Message)
	KindFriendAccepted  = "friend_accepted"  // From accepted UserID's request
	KindFriendDeclined  = "friend_declined"  // From declined UserID's request
	KindFriendCancelled = "friend_cancelled" // From withdrew the request to UserID
	KindFriendRemoved   = "friend_removed"   // From ended the friendship
	KindGroupInvite     = "group_invite"     // From invited UserID to the group RoomID
	KindGroupRemoved    = "group_removed"    // From removed UserID from the group
	KindGroupUpdated    = "group_updated"    // the group's name, avatar, announcement or roles changed
	KindGroupDissolved  = "group_dissolved"  // the owner dissolved the group
)

// Notice tells a local user's sessions that something social happened to them. It
// is a wake-up for typed native pushes; the truth is in the rooms and the request
// table, which a client that missed the notice (offline) reads when it connects.
type Notice struct {
	// UserID is the local user the notice is for.
	UserID  string `json:"user_id"`
	Kind    string `json:"kind"`
	RoomID  string `json:"room_id"`
	From    string `json:"from,omitempty"`
	Message string `json:"message,omitempty"`
}

// Config configures the service.
type Config struct {
	ServerName string
	// MaxGroupMembers caps a group's joined plus invited members. Default 500.
	MaxGroupMembers int
	// Bus, if not nil, carries Notices and wakes the consumer on room notices.
	Bus *nats.Conn
}

// Deps are the core services social is built on.
type Deps struct {
	DB       *storage.DB
	Rooms    *rooms.Service
	Users    *users.Service
	Presence *presence.Service
	// Push holds the mute rules; nil disables mute (M_UNRECOGNIZED).
	Push *push.Service
}

// Service is friends and groups. It is safe for concurrent use.
type Service struct {
	cfg Config
	d   Deps

	// adLocks serialise read-modify-write of one user's account data (m.direct,
	// im.hongyan.friends, m.ignored_user_list), by hash of the user ID.
	adLocks [32]sync.Mutex

	groupMu sync.Mutex
	groups  map[string]bool // room → has the group marker; create content never changes; guarded by groupMu

	// ignoredMu guards ignored: user → the users they ignore, read from
	// m.ignored_user_list once and dropped when their account data changes (the
	// bus's AccountDataNotice, on every node), since every read of events asks.
	ignoredMu sync.Mutex
	ignored   map[string]map[string]bool

	ctx    context.Context // the consumer's lifetime; cancelled by Close
	cancel context.CancelFunc
	wake   chan struct{}
	wg     sync.WaitGroup
	subs   []*nats.Subscription
}

// New returns the service. Start runs its consumer.
func New(cfg Config, d Deps) *Service {
	if cfg.MaxGroupMembers <= 0 {
		cfg.MaxGroupMembers = 500
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{cfg: cfg, d: d, groups: map[string]bool{}, ignored: map[string]map[string]bool{}, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
}

// Start starts the consumer of the events stream: it begins at the stream's end on
// a new database and where it stopped otherwise, so nothing committed while the
// server was down is missed.
func (s *Service) Start(ctx context.Context) error {
	if err := s.initCursor(ctx); err != nil {
		return err
	}
	if s.cfg.Bus != nil {
		sub, err := s.cfg.Bus.Subscribe(rooms.NoticeSubject, func(*nats.Msg) { s.poke() })
		if err != nil {
			return fmt.Errorf("social: subscribe: %w", err)
		}
		s.subs = append(s.subs, sub)
		if sub, err = s.cfg.Bus.Subscribe(users.AccountDataSubject, s.onAccountData); err != nil {
			return fmt.Errorf("social: subscribe: %w", err)
		}
		s.subs = append(s.subs, sub)
	}
	s.wg.Add(1)
	go s.consume()
	return nil
}

// Close stops the consumer and waits for it.
func (s *Service) Close() {
	for _, sub := range s.subs {
		sub.Unsubscribe()
	}
	s.cancel()
	s.wg.Wait()
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Service) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.cfg.ServerName)
}

func (s *Service) localpart(userID string) string {
	l, _ := s.d.Users.LocalpartOf(userID)
	return l
}

// lockUser serialises account data changes of one user on this node.
func (s *Service) lockUser(userID string) func() {
	h := fnv.New32a()
	h.Write([]byte(userID))
	m := &s.adLocks[h.Sum32()%uint32(len(s.adLocks))]
	m.Lock()
	return m.Unlock
}

// publish sends a notice to a local user's sessions.
func (s *Service) publish(n Notice) {
	if s.cfg.Bus == nil || !s.isLocal(n.UserID) {
		return
	}
	data, _ := json.Marshal(n)
	if err := s.cfg.Bus.Publish(Subject, data); err != nil {
		// The change is committed; the client reads it when it next lists.
		slog.Warn("publish social notice", "kind", n.Kind, "user_id", n.UserID, "err", err)
	}
}

// editAccountData reads a local user's global account data of typ as a JSON
// object, lets edit change it, and writes it back when edit reports a change.
func (s *Service) editAccountData(ctx context.Context, userID, typ string, edit func(obj map[string]any) bool) error {
	if !s.isLocal(userID) {
		return nil
	}
	unlock := s.lockUser(userID)
	defer unlock()
	local := s.localpart(userID)
	obj := map[string]any{}
	raw, err := s.d.Users.AccountData(ctx, local, "", typ)
	if err == nil {
		if json.Unmarshal(raw, &obj) != nil || obj == nil {
			obj = map[string]any{}
		}
	} else if err != users.ErrNotFound {
		return err
	}
	if !edit(obj) {
		return nil
	}
	data, _ := json.Marshal(obj)
	if _, err := s.d.Users.SetAccountData(ctx, local, "", typ, data); err != nil {
		return fmt.Errorf("%s of %s: %w", typ, userID, err)
	}
	// The bus tells every node; this node forgets at once, so the next read here
	// already filters.
	s.ignoredMu.Lock()
	delete(s.ignored, userID)
	s.ignoredMu.Unlock()
	return nil
}

// readAccountData reads a local user's global account data of typ as an object.
func (s *Service) readAccountData(ctx context.Context, userID, typ string) (map[string]any, error) {
	obj := map[string]any{}
	raw, err := s.d.Users.AccountData(ctx, s.localpart(userID), "", typ)
	if err == users.ErrNotFound {
		return obj, nil
	}
	if err != nil {
		return nil, err
	}
	if json.Unmarshal(raw, &obj) != nil || obj == nil {
		return map[string]any{}, nil
	}
	return obj, nil
}

func nowMs() int64 { return time.Now().UnixMilli() }
