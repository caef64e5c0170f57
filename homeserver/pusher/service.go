package pusher

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Source is what the rule evaluator (push.Service) offers delivery: its
// notifications stream, every notification after a position in position order
// (Unread left zero), and unread counts.
type Source interface {
	NotificationsSince(ctx context.Context, after int64, limit int) ([]push.Notification, error)
	// UnreadCounts returns the user's counts in each of the rooms.
	UnreadCounts(ctx context.Context, userID string, roomIDs []string, threads bool) (map[string]push.Unread, error)
	// FillUnread sets the notifications' Unread counts.
	FillUnread(ctx context.Context, ns []push.Notification) error
}

// NotifiedSubject is the bus subject a Notified is published on after the
// scanner queued a batch of notifications: native sessions show them to their
// users at once, on every node.
const NotifiedSubject = "hongyan.pusher.notified"

// Notified is a batch of notifications just taken from the stream.
type Notified struct {
	Notifications []push.Notification `json:"notifications"`
}

// Config sets delivery's limits. Zero values take the defaults given.
type Config struct {
	// Guard dials every gateway. Nil: a guard admitting public addresses only.
	Guard *outbound.Guard
	// MinBackoff is the first wait after a failed delivery; it doubles with every
	// failure in a row up to MaxBackoff. Defaults 1 s and 10 min.
	MinBackoff, MaxBackoff time.Duration
	// GiveUpAfter is how long a pusher may fail in a row before the notification at
	// the head of its queue is dropped (as Synapse, one day): a gateway down for
	// good stops costing anything but one attempt per notification per backoff.
	// Default 24 h.
	GiveUpAfter time.Duration
	// InsecureSkipVerify accepts any certificate from gateways: test networks only.
	InsecureSkipVerify bool
	// RequestTimeout bounds one POST to a gateway, body included. Default 30 s.
	RequestTimeout time.Duration
	// MaxPushersPerUser bounds how many pushers one user may set. Default 50.
	MaxPushersPerUser int
}

func (c *Config) defaults() {
	if c.Guard == nil {
		c.Guard = outbound.New(outbound.Policy{Purpose: "push gateway"})
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 10 * time.Minute
	}
	if c.GiveUpAfter <= 0 {
		c.GiveUpAfter = 24 * time.Hour
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.MaxPushersPerUser <= 0 {
		c.MaxPushersPerUser = 50
	}
}

// Deps are the services delivery reads from.
type Deps struct {
	DB *storage.DB
	// Rooms reads each pushed event through the visibility filter for its user.
	Rooms *rooms.Service
	// Source is the notifications stream; nil stores pushers but delivers nothing.
	Source Source
	// Receipts, with Bus, lets a read receipt send a badge update.
	Receipts *receipts.Service
	// Bus wakes the scanner (push.NoticeSubject) and carries NotifiedSubject.
	Bus *nats.Conn
}

// Service stores pushers and delivers to them. It is safe for concurrent use.
type Service struct {
	cfg    Config
	db     *storage.DB
	d      Deps
	guard  *outbound.Guard
	client *http.Client
	log    *slog.Logger
	// node names this process in pusher leases.
	node string

	ctx    context.Context // the service's lifetime: cancelled by Close
	cancel context.CancelFunc
	wake   chan struct{}
	subs   []*nats.Subscription
	wg     sync.WaitGroup // the scanner and the workers

	mu sync.Mutex
	// workers holds the running worker of each pusher with work; guarded by mu.
	// A worker leaves when its queue is empty, so the map is bounded by the
	// pushers with something to send.
	workers map[int64]*worker
	closed  bool // guarded by mu
}

// New returns the service and starts delivery: the scanner, and a worker for
// every pusher with work left from before a restart. The caller must Close it.
func New(ctx context.Context, cfg Config, d Deps) (*Service, error) {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Service{cfg: cfg, db: d.DB, d: d, guard: cfg.Guard, log: slog.With("component", "pusher"),
		ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), workers: map[int64]*worker{}, node: newNodeID()}
	s.client = cfg.Guard.Client(cfg.RequestTimeout)
	if cfg.InsecureSkipVerify {
		s.client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // #nosec G402 -- test networks only, logged
	}
	if d.Source == nil {
		return s, nil
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO pusher_cursor (name, pos) VALUES ('pusher', 0) ON CONFLICT (name) DO NOTHING`); err != nil {
		cancel()
		return nil, fmt.Errorf("pusher cursor: %w", err)
	}
	if d.Bus != nil {
		handlers := map[string]nats.MsgHandler{push.NoticeSubject: func(*nats.Msg) { s.poke() }}
		if d.Receipts != nil {
			handlers[receipts.Subject] = s.onReceipt
		}
		for subject, fn := range handlers {
			sub, err := d.Bus.Subscribe(subject, fn)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("subscribe %s: %w", subject, err)
			}
			s.subs = append(s.subs, sub)
		}
	}
	s.wg.Add(1)
	go s.scan()
	ids, err := s.pushersWithWork(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	for _, id := range ids {
		s.kick(id)
	}
	return s, nil
}

// Close stops delivery and waits for the scanner and the workers. What is queued
// stays queued for the next start.
func (s *Service) Close() {
	for _, sub := range s.subs {
		sub.Unsubscribe()
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	// Another node may take this one's pushers at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.db.Exec(ctx, `UPDATE pushers SET lease_until = 0 WHERE lease_node = $1`, s.node); err != nil {
		s.log.Warn("release pusher leases", "err", err)
	}
}

func newNodeID() string {
	b := make([]byte, 9)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Guard is the guard delivery dials through; tests read its counters.
func (s *Service) Guard() *outbound.Guard { return s.guard }

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// FillUnread sets the Unread counts of notifications (from NotifiedSubject): a
// front-end fills them only for the users it shows them to.
func (s *Service) FillUnread(ctx context.Context, ns []push.Notification) error {
	if s.d.Source == nil {
		return nil
	}
	return s.d.Source.FillUnread(ctx, ns)
}

// onReceipt queues a badge update for the pushers of a local user whose read
// receipt may have lowered their unread counts.
func (s *Service) onReceipt(m *nats.Msg) {
	var n receipts.Notice
	if json.Unmarshal(m.Data, &n) != nil {
		return
	}
	got, err := s.d.Receipts.Since(s.ctx, []string{n.RoomID}, "", n.StreamPos-1, n.StreamPos)
	if err != nil {
		s.log.Warn("read receipt for badge", "room_id", n.RoomID, "err", err)
		return
	}
	for _, r := range got[n.RoomID] {
		if err := s.queueBadge(s.ctx, r.UserID); err != nil {
			s.log.Warn("queue badge update", "user", r.UserID, "err", err)
		}
	}
	// Private receipts are not in a public Since: ask for them per user would
	// need the user; the notice does not carry it, so private ones go without.
}
