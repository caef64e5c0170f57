// Package rooms is the room engine: it builds Matrix events with gomatrixserverlib,
// authorises them against the room's state, and persists each event together with the
// state it produces in one transaction. Every write to a room goes through one path,
// (*Service).write, whoever asks for it: the client API, the native protocol, and
// (later) federation.
//
// Writers of one room are serialised twice: by an in-process lock, so a node does not
// make its writers wait on the database, and by locking the room's row inside the
// transaction, so that two nodes cannot fork the room. Different rooms proceed in
// parallel up to the global stream position, which is taken last, just before commit.
//
// After a commit the service publishes a Notice on the bus (subject NoticeSubject);
// consumers (sync, native sessions, federation sender) read what changed from SQL.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// ErrNotFound is returned for rooms, events and aliases that do not exist (or that
// the caller may not know exist).
var ErrNotFound = errors.New("not found")

// NoticeSubject is the NATS subject a Notice is published on after every committed
// event.
const NoticeSubject = "hongyan.rooms.events"

// StateCompletedSubject carries the ID of a room whose partial state (after a
// faster join) has just been completed.
const StateCompletedSubject = "hongyan.rooms.state_completed"

// Notice says that an event was committed at a stream position.
type Notice struct {
	RoomID    string  `json:"room_id"`
	EventID   string  `json:"event_id"`
	Type      string  `json:"type"`
	StateKey  *string `json:"state_key,omitempty"`
	StreamPos int64   `json:"stream_pos"`
	// Seq is the event's room_seq: 1 + the room's previous event's.
	Seq int64 `json:"seq"`
}

// Profiles gives the displayname and avatar of local users for their member events.
type Profiles interface {
	MemberProfile(ctx context.Context, userID string) (displayName, avatarURL string)
}

// Guests tells local guest accounts apart: guests may join only rooms whose
// m.room.guest_access is can_join, and leave rooms that stop allowing them.
type Guests interface {
	IsGuest(ctx context.Context, userID string) (bool, error)
}

// Erasures names the local users whose accounts were deactivated with erasure.
type Erasures interface {
	ErasedUsers(ctx context.Context, userIDs []string) (map[string]bool, error)
}

// UserRoomState moves a user's own view of a room (tags, m.direct) to the room that
// replaces it after an upgrade.
type UserRoomState interface {
	RoomUpgraded(ctx context.Context, userID, oldRoomID, newRoomID string) error
}

// Config configures the engine.
type Config struct {
	// ServerName signs events and owns local users and aliases.
	ServerName string
	// Key signs events.
	Key serverkey.Key
	// DefaultRoomVersion is used when createRoom names none. Empty means "10".
	DefaultRoomVersion string
	// Bus, if not nil, receives a Notice after every commit.
	Bus *nats.Conn
	// Profiles fills member events' displayname and avatar_url. May be nil.
	Profiles Profiles
	// Gate, if not nil, may refuse a local invite or join before it is built
	// (homeserver/social's group size cap).
	Gate MembershipGate
	// Ignored, if not nil, names the users a reader ignores; the visibility
	// filter hides their non-state events from that reader.
	Ignored IgnoredUsers
	// Suspension says whether a local user is suspended (M_USER_SUSPENDED): a
	// suspended user may leave and redact their own events, not create rooms,
	// join, knock, invite or send. May be nil (nobody is suspended).
	Suspension Suspension
	// AliasReserved, if not nil, reports whether an alias lies in an application
	// service's exclusive namespace that creator does not belong to: SetAlias
	// refuses it with M_EXCLUSIVE.
	AliasReserved func(alias, creator string) bool
	// AliasMissing, if not nil, is asked about a local alias that does not exist
	// before ResolveAlias gives up: an application service whose namespace holds
	// it may create it then (the spec's alias query). It reports whether it may
	// exist now.
	AliasMissing func(ctx context.Context, alias string) bool
	// UserMissing, if not nil, is told about a local user about to be invited
	// before the invite is built: an application service whose namespace holds
	// the user may create them then (the spec's user query). Every front-end's
	// invites go through it.
	UserMissing func(ctx context.Context, userID string)
	// StateWritten, if not nil, is told after a local user's state event commits
	// through Send (homeserver/delayed cancels other users' pending delayed events
	// for the same state). Every front-end's state sets go through it.
	StateWritten func(ctx context.Context, roomID, typ, stateKey, sender string)
	// Guests, if not nil, enforces the guest access rules; nil means no user is a
	// guest.
	Guests Guests
	// Erasures, if not nil, has erased users' events shown pruned to readers who
	// were not joined when they were sent; nil means nobody is erased.
	Erasures Erasures
	// UserRoomState, if not nil, carries the upgrader's tags and m.direct entry
	// over to an upgraded room.
	UserRoomState UserRoomState
}

// Suspension is the account check the engine asks before a user acts.
type Suspension interface {
	CheckNotSuspended(ctx context.Context, userID string) error
}

// checkActive refuses a suspended local user.
func (s *Service) checkActive(ctx context.Context, userID string) error {
	if s.cfg.Suspension == nil || !strings.HasSuffix(userID, ":"+s.cfg.ServerName) {
		return nil
	}
	return s.cfg.Suspension.CheckNotSuspended(ctx, userID)
}

// Service is the room engine. It is safe for concurrent use.
type Service struct {
	db  *storage.DB
	cfg Config

	locks [64]sync.Mutex // per-room write locks, by hash of the room ID

	// remote joins rooms through other servers; nil until federation is set up.
	remote Remote

	// seen caches, per state snapshot and user, the history visibility and the
	// user's membership there. Snapshots never change, so entries never go stale;
	// every message of a conversation shares the snapshot before it, so each
	// reader resolves it once instead of once per event and request.
	seenMu sync.Mutex
	seen   map[seenKey][2]string

	// acls holds server ACLs compiled once per m.room.server_acl event, since
	// every PDU and federation request checks its room's ACL.
	acls aclCache
}

type seenKey struct {
	snapshot int64
	userID   string
}

// maxSeen bounds the visibility cache; when full it starts over.
const maxSeen = 100_000

// New returns the engine over db.
func New(db *storage.DB, cfg Config) *Service {
	if cfg.DefaultRoomVersion == "" {
		cfg.DefaultRoomVersion = "10"
	}
	return &Service{db: db, cfg: cfg, seen: map[seenKey][2]string{}}
}

// lockRoom serialises this node's writers of one room. Rooms sharing a slot wait on
// each other, which is rare with 64 slots and harmless.
func (s *Service) lockRoom(roomID string) func() {
	h := fnv.New32a()
	h.Write([]byte(roomID))
	m := &s.locks[h.Sum32()%uint32(len(s.locks))]
	m.Lock()
	return m.Unlock
}

func (s *Service) publish(n Notice) {
	data, _ := json.Marshal(n)
	s.publishTo(NoticeSubject, n.RoomID, data...)
}

// publishTo publishes data (by default the room ID) on subject after a commit.
func (s *Service) publishTo(subject, roomID string, data ...byte) {
	if s.cfg.Bus == nil {
		return
	}
	if data == nil {
		data = []byte(roomID)
	}
	if err := s.cfg.Bus.Publish(subject, data); err != nil {
		// The change is committed; a lost wake-up only delays readers until their
		// next poll, so it is logged, not returned.
		slog.Warn("publish room notice", "subject", subject, "room_id", roomID, "err", err)
	}
}

// userIDForSender maps sender IDs to user IDs: before pseudonymous IDs (MSC4014)
// they are the same.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

func now() time.Time { return time.Now() }

func versionImpl(v string) (gomatrixserverlib.IRoomVersion, error) {
	return gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
}
