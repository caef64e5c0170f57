// Package delayed holds MSC4140 delayed events: a client hands the server an event
// now and the server sends it later, when its delay runs out, unless the client
// restarts the delay (a heartbeat), cancels it, or asks for it at once. Element Call
// schedules its own m.call.member leave this way, so a client that dies mid-call
// still leaves it within the delay instead of staying in the call for everyone.
//
// Pending events live in the delayed_events table, so they survive a restart: a
// scheduler on every node looks for due rows and claims each by deleting it (a
// conditional delete, so of several nodes exactly one sends it), then sends it
// through rooms.Service.Send as the user who scheduled it, so every rule that
// applies to a normal send (membership, power levels, suspension) applies then.
// Delivery is at most once: a node that dies between the claim and the send loses
// that one event.
package delayed

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// MaxPerUser caps the delayed events one user may have pending, so that the table
// cannot be grown without bound by one account.
const MaxPerUser = 100

// Config configures the service. The zero value takes the defaults.
type Config struct {
	// MaxDelay is the longest delay a client may ask for. Default 24h, as Synapse's.
	MaxDelay time.Duration
	// Poll is how often the scheduler looks for due events when nothing woke it
	// earlier (another node may have scheduled one). Default 1s.
	Poll time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Service schedules, lists, updates and fires delayed events.
type Service struct {
	cfg   Config
	db    *storage.DB
	rooms *rooms.Service

	wake   chan struct{} // buffered 1: a new or restarted event may be due earlier
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns the service; Start runs its scheduler.
func New(cfg Config, db *storage.DB, rs *rooms.Service) *Service {
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 24 * time.Hour
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, db: db, rooms: rs, wake: make(chan struct{}, 1), cancel: func() {}}
}

// Event is one pending delayed event, in the shape GET /delayed_events lists.
type Event struct {
	DelayID      string          `json:"delay_id"`
	RoomID       string          `json:"room_id"`
	Type         string          `json:"type"`
	StateKey     *string         `json:"state_key,omitempty"`
	Delay        int64           `json:"delay"`
	RunningSince int64           `json:"running_since"`
	Content      json.RawMessage `json:"content"`
}

// Request is what a client schedules.
type Request struct {
	UserID, DeviceID, RoomID, Type string
	StateKey                       *string // nil: a message event
	Content                        json.RawMessage
	Delay                          time.Duration
	// TxnID makes a retried request schedule once: the same user and TxnID get the
	// pending event's delay ID back. Empty: every request schedules.
	TxnID string
}

// Schedule stores a delayed event and returns its delay ID.
func (s *Service) Schedule(ctx context.Context, req Request) (string, error) {
	if req.Delay < 0 {
		return "", mxerror.New(mxerror.InvalidParam, "delay must not be negative")
	}
	if req.Delay > s.cfg.MaxDelay {
		return "", mxerror.New(mxerror.InvalidParam, "delay is longer than the maximum of %d ms", s.cfg.MaxDelay.Milliseconds())
	}
	if err := rooms.CheckRoomID(req.RoomID); err != nil {
		return "", err
	}
	if req.TxnID != "" {
		var id string
		err := s.db.QueryRow(ctx, `SELECT delay_id FROM delayed_events WHERE user_id = $1 AND txn_id = $2`, req.UserID, req.TxnID).Scan(&id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("read delayed event txn of %s: %w", req.UserID, err)
		}
	}
	var pending int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM delayed_events WHERE user_id = $1`, req.UserID).Scan(&pending); err != nil {
		return "", fmt.Errorf("count delayed events of %s: %w", req.UserID, err)
	}
	if pending >= MaxPerUser {
		return "", mxerror.New(mxerror.LimitExceeded, "too many pending delayed events (at most %d)", MaxPerUser)
	}
	id, err := newID()
	if err != nil {
		return "", err
	}
	now := s.cfg.Now().UnixMilli()
	var sk, txn sql.NullString
	if req.TxnID != "" {
		txn = sql.NullString{String: req.TxnID, Valid: true}
	}
	if req.StateKey != nil {
		sk = sql.NullString{String: *req.StateKey, Valid: true}
	}
	content := req.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	_, err = s.db.Exec(ctx, `INSERT INTO delayed_events (delay_id, user_id, device_id, txn_id, room_id, event_type, state_key, content, delay_ms, running_since, send_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		id, req.UserID, req.DeviceID, txn, req.RoomID, req.Type, sk, string(content), req.Delay.Milliseconds(), now, now+req.Delay.Milliseconds())
	if err != nil && txn.Valid && storage.IsUniqueViolation(err) {
		// The same transaction raced in at once: answer with the one that won.
		var id string
		if err := s.db.WriteQueryRow(ctx, `SELECT delay_id FROM delayed_events WHERE user_id = $1 AND txn_id = $2`, req.UserID, req.TxnID).Scan(&id); err != nil {
			return "", fmt.Errorf("read delayed event txn of %s: %w", req.UserID, err)
		}
		return id, nil
	}
	if err != nil {
		return "", fmt.Errorf("store delayed event for %s: %w", req.UserID, err)
	}
	s.poke()
	return id, nil
}

// List returns the user's pending delayed events, oldest first.
func (s *Service) List(ctx context.Context, userID string) ([]Event, error) {
	rows, err := s.db.Query(ctx, `SELECT delay_id, room_id, event_type, state_key, delay_ms, running_since, content
		FROM delayed_events WHERE user_id = $1 ORDER BY running_since, delay_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list delayed events of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		var e Event
		var sk sql.NullString
		var content string
		if err := rows.Scan(&e.DelayID, &e.RoomID, &e.Type, &sk, &e.Delay, &e.RunningSince, &content); err != nil {
			return nil, fmt.Errorf("list delayed events of %s: %w", userID, err)
		}
		if sk.Valid {
			e.StateKey = &sk.String
		}
		e.Content = json.RawMessage(content)
		out = append(out, e)
	}
	return out, rows.Err()
}

// The actions POST /delayed_events/{delay_id} takes.
const (
	ActionRestart = "restart"
	ActionCancel  = "cancel"
	ActionSend    = "send"
)

// Update restarts, cancels or sends at once one of the user's delayed events. An ID
// that is unknown or another user's is M_NOT_FOUND either way, so that nobody can
// probe for other users' delay IDs.
func (s *Service) Update(ctx context.Context, userID, delayID, action string) error {
	notFound := mxerror.New(mxerror.NotFound, "no delayed event %s", delayID)
	switch action {
	case ActionRestart:
		now := s.cfg.Now().UnixMilli()
		res, err := s.db.Exec(ctx, `UPDATE delayed_events SET running_since = $1, send_ts = $1 + delay_ms
			WHERE delay_id = $2 AND user_id = $3`, now, delayID, userID)
		if err != nil {
			return fmt.Errorf("restart delayed event %s: %w", delayID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound
		}
		s.poke()
		return nil
	case ActionCancel:
		res, err := s.db.Exec(ctx, `DELETE FROM delayed_events WHERE delay_id = $1 AND user_id = $2`, delayID, userID)
		if err != nil {
			return fmt.Errorf("cancel delayed event %s: %w", delayID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound
		}
		return nil
	case ActionSend:
		ev, ok, err := s.claim(ctx, delayID, userID, -1)
		if err != nil {
			return err
		}
		if !ok {
			return notFound
		}
		return s.send(ctx, ev)
	default:
		return mxerror.New(mxerror.InvalidParam, "action must be restart, cancel or send")
	}
}

// StateSet is told that sender set the state (roomID, typ, stateKey) in the normal
// way. Pending delayed state events of other users for the same state are cancelled,
// as Synapse does, because they were scheduled against state that no longer holds.
// The sender's own are kept: Element Call schedules its leave before it joins, and
// the join must not cancel it.
func (s *Service) StateSet(ctx context.Context, roomID, typ, stateKey, sender string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM delayed_events WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND user_id <> $4`,
		roomID, typ, stateKey, sender)
	if err != nil {
		return fmt.Errorf("cancel delayed state %s %s in %s: %w", typ, stateKey, roomID, err)
	}
	return nil
}

// pending is a claimed row, about to be sent.
type pending struct {
	id, userID, roomID, typ string
	stateKey                *string
	content                 json.RawMessage
}

// claim deletes one delayed event and returns it; of several callers (nodes) exactly
// one gets ok. dueBy >= 0 claims it only if it is due by then (send_ts <= dueBy);
// userID != "" only if it is that user's.
func (s *Service) claim(ctx context.Context, delayID, userID string, dueBy int64) (pending, bool, error) {
	var p pending
	ok := false
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var sk sql.NullString
		var content string
		err := tx.QueryRow(ctx, `SELECT user_id, room_id, event_type, state_key, content FROM delayed_events
			WHERE delay_id = $1 AND ($2 = '' OR user_id = $2) AND (CAST($3 AS BIGINT) < 0 OR send_ts <= CAST($3 AS BIGINT))`, delayID, userID, dueBy).
			Scan(&p.userID, &p.roomID, &p.typ, &sk, &content)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		// The conditional delete is the claim: on PostgreSQL a second node's delete of
		// the same row waits for this transaction and then deletes nothing.
		res, err := tx.Exec(ctx, `DELETE FROM delayed_events WHERE delay_id = $1 AND (CAST($2 AS BIGINT) < 0 OR send_ts <= CAST($2 AS BIGINT))`, delayID, dueBy)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		ok = n == 1
		p.id, p.content = delayID, json.RawMessage(content)
		if sk.Valid {
			p.stateKey = &sk.String
		}
		return nil
	})
	if err != nil {
		return pending{}, false, fmt.Errorf("claim delayed event %s: %w", delayID, err)
	}
	return p, ok, nil
}

// send sends a claimed event as its user, through every rule of rooms.Send.
func (s *Service) send(ctx context.Context, p pending) error {
	// A fired state event cancels other users' pending ones for the same state
	// through the engine's StateWritten hook, like any state set.
	_, err := s.rooms.Send(ctx, p.roomID, rooms.Proto{Sender: p.userID, Type: p.typ, StateKey: p.stateKey, Content: p.content})
	return err
}

// Start runs the scheduler until Close. Events that fell due while the server was
// down fire on its first pass.
func (s *Service) Start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(ctx)
	}()
}

// Close stops the scheduler and waits for it.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run fires due events, then sleeps until the next one is due, a poke, or Poll.
func (s *Service) run(ctx context.Context) {
	for {
		next, err := s.fireDue(ctx)
		if err != nil && ctx.Err() == nil {
			slog.Warn("delayed events: fire due events", "err", err)
		}
		wait := s.cfg.Poll
		if next > 0 {
			if d := time.Until(time.UnixMilli(next)); d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// fireDue sends every event due now and returns when the next one is due (0: none).
func (s *Service) fireDue(ctx context.Context) (int64, error) {
	now := s.cfg.Now().UnixMilli()
	rows, err := s.db.Query(ctx, `SELECT delay_id FROM delayed_events WHERE send_ts <= $1 ORDER BY send_ts LIMIT 100`, now)
	if err != nil {
		return 0, fmt.Errorf("list due delayed events: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("list due delayed events: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list due delayed events: %w", err)
	}
	for _, id := range ids {
		p, ok, err := s.claim(ctx, id, "", now)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue // another node took it, or it was restarted or cancelled meanwhile
		}
		if err := s.send(ctx, p); err != nil {
			// The rules of a normal send refused it (the user left, lost power): it is
			// dropped, as Synapse drops it.
			slog.Info("delayed event refused when due", "delay_id", id, "user", p.userID, "room", p.roomID, "err", err)
		}
	}
	if len(ids) == 100 {
		return now, nil // more may be due: go again at once
	}
	var next sql.NullInt64
	if err := s.db.QueryRow(ctx, `SELECT MIN(send_ts) FROM delayed_events`).Scan(&next); err != nil {
		return 0, fmt.Errorf("next delayed event: %w", err)
	}
	return next.Int64, nil
}

func newID() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("delay id: %w", err)
	}
	return "syd_" + base64.RawURLEncoding.EncodeToString(b), nil
}
