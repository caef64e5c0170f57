// Package presence stores whether users are online, unavailable or offline, hands
// sync the changes of the users who share a room with someone, and decides who may
// look up whose presence (CanSee), for every front-end alike.
package presence

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	gosync "sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Subject is the NATS subject a presence change is announced on.
const Subject = "hongyan.presence"

// The presence states.
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// idleAfter is how long an online user may be inactive before they show as
// unavailable; activeWindow is how recent activity must be for currently_active.
const (
	idleAfter    = 5 * time.Minute
	activeWindow = time.Minute
)

// Status is a user's presence as clients see it.
type Status struct {
	UserID          string  `json:"-"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago,omitempty"`
	CurrentlyActive bool    `json:"currently_active"`
	StreamPos       int64   `json:"-"`
}

// Config says what presence is shared with whom. The zero value records presence
// and shows it only to the user and those who share a joined room with them.
type Config struct {
	// Disabled drops presence updates: everyone shows as offline and sync carries
	// no presence, as Synapse's presence.enabled: false.
	Disabled bool
	// VisibleToAll lets any user look up anyone's presence. Sync still carries
	// only room-mates' presence.
	VisibleToAll bool
}

// Service stores presence.
type Service struct {
	db  *storage.DB
	bus *nats.Conn
	cfg Config

	mu     gosync.Mutex
	recent map[string]recentSet // user → last activity-only write; guarded by mu
}

type recentSet struct {
	state string
	at    time.Time
}

// New returns the service; bus may be nil.
func New(db *storage.DB, bus *nats.Conn, cfg Config) *Service {
	return &Service{db: db, bus: bus, cfg: cfg, recent: map[string]recentSet{}}
}

// CanSee reports whether observer may see subject's presence: their own, that of
// users they share a joined room with, or anyone's when VisibleToAll. A stranger
// learns nothing, not even whether the subject exists.
func (s *Service) CanSee(ctx context.Context, observer, subject string) (bool, error) {
	if observer == subject || s.cfg.VisibleToAll {
		return true, nil
	}
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 WHERE $2 IN (`+rooms.SharedRoomMembersSQL("$1")+`)`, observer, subject).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("shared rooms of %s and %s: %w", observer, subject, err)
	}
	return true, nil
}

// GetFor returns subject's presence as observer may see it, or M_FORBIDDEN when
// CanSee says no. Every front-end's presence lookup goes through it.
func (s *Service) GetFor(ctx context.Context, observer, subject string) (Status, error) {
	ok, err := s.CanSee(ctx, observer, subject)
	if err != nil {
		return Status{}, err
	}
	if !ok {
		// Synapse's words.
		return Status{}, mxerror.New(mxerror.Forbidden, "You are not allowed to see their presence.")
	}
	return s.Get(ctx, subject)
}

// Touch records activity in a state without a status message change, the call every
// /sync makes. It skips the database while the same state was written less than a
// minute ago, so polling clients do not turn reads into writes.
func (s *Service) Touch(ctx context.Context, userID, state string) error {
	if s.cfg.Disabled {
		return nil
	}
	now := time.Now()
	s.mu.Lock()
	r, ok := s.recent[userID]
	fresh := ok && r.state == state && now.Sub(r.at) < activeWindow
	if !fresh {
		s.recent[userID] = recentSet{state: state, at: now}
	}
	s.mu.Unlock()
	if fresh {
		return nil
	}
	return s.Set(ctx, userID, state, nil)
}

// Valid reports whether state is a presence state.
func Valid(state string) bool { return state == Online || state == Unavailable || state == Offline }

// Set records a user's presence. statusMsg nil keeps the current message. Activity
// alone (same state and message) moves the stream at most once a minute.
func (s *Service) Set(ctx context.Context, userID, state string, statusMsg *string) error {
	return s.set(ctx, userID, state, statusMsg, time.Now().UnixMilli())
}

// SetRemote records the presence another server reports for one of its users, who
// was last active lastActiveAgo milliseconds ago.
func (s *Service) SetRemote(ctx context.Context, userID, state string, statusMsg *string, lastActiveAgo int64) error {
	return s.set(ctx, userID, state, statusMsg, time.Now().UnixMilli()-max(lastActiveAgo, 0))
}

func (s *Service) set(ctx context.Context, userID, state string, statusMsg *string, now int64) error {
	if !Valid(state) {
		return mxerror.New(mxerror.InvalidParam, "presence must be online, unavailable or offline")
	}
	if statusMsg != nil && len(*statusMsg) > 1024 {
		return mxerror.New(mxerror.InvalidParam, "status_msg may not be longer than 1024 bytes")
	}
	if s.cfg.Disabled {
		return nil // accepted and dropped, as Synapse does with presence off
	}
	var moved bool
	var pos int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var curState string
		var curMsg sql.NullString
		var lastActive int64
		err := tx.QueryRow(ctx, `SELECT state, status_msg, last_active_ts FROM presence WHERE user_id = $1`, userID).Scan(&curState, &curMsg, &lastActive)
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		msg := curMsg
		if statusMsg != nil {
			msg = sql.NullString{String: *statusMsg, Valid: *statusMsg != ""}
		}
		if found && curState == state && msg == curMsg && now-lastActive < activeWindow.Milliseconds() {
			return nil // nothing a client would notice
		}
		if err := tx.NextStreamPos(ctx, "presence", &pos); err != nil {
			return err
		}
		moved = true
		_, err = tx.Exec(ctx, `INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
			last_active_ts = excluded.last_active_ts, stream_pos = excluded.stream_pos`, userID, state, msg, now, pos)
		return err
	})
	if err != nil {
		return fmt.Errorf("set presence of %s: %w", userID, err)
	}
	if moved && s.bus != nil {
		data, _ := json.Marshal(map[string]any{"user_id": userID, "stream_pos": pos})
		if err := s.bus.Publish(Subject, data); err != nil {
			slog.Warn("publish presence", "err", err)
		}
	}
	return nil
}

// Get returns a user's presence; users never seen are offline, and so is
// everyone while presence is disabled. It checks no permission: lookups on a
// user's behalf use GetFor.
func (s *Service) Get(ctx context.Context, userID string) (Status, error) {
	st := Status{UserID: userID, Presence: Offline}
	if s.cfg.Disabled {
		return st, nil
	}
	var msg sql.NullString
	var lastActive int64
	err := s.db.QueryRow(ctx, `SELECT state, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id = $1`, userID).
		Scan(&st.Presence, &msg, &lastActive, &st.StreamPos)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("presence of %s: %w", userID, err)
	}
	return derive(st, msg, lastActive), nil
}

// Known returns a user's presence for a client that has never been told it (a
// user who just came to share a room with them): offline for a user never seen.
// ok is false while presence is disabled: there is nothing to tell.
func (s *Service) Known(ctx context.Context, userID string) (st Status, ok bool, err error) {
	if s.cfg.Disabled {
		return Status{}, false, nil
	}
	st, err = s.Get(ctx, userID)
	return st, err == nil, err
}

// derive fills the fields computed at read time: idle online users show as
// unavailable, and currently_active reflects the last minute.
func derive(st Status, msg sql.NullString, lastActive int64) Status {
	if msg.Valid {
		st.StatusMsg = &msg.String
	}
	ago := time.Now().UnixMilli() - lastActive
	st.LastActiveAgo = max(ago, 1)
	st.CurrentlyActive = st.Presence == Online && ago < activeWindow.Milliseconds()
	if st.Presence == Online && ago > idleAfter.Milliseconds() {
		st.Presence = Unavailable
	}
	return st
}

// Position is the latest committed presence position.
func (s *Service) Position(ctx context.Context) (int64, error) {
	var pos int64
	err := s.db.StreamPos(ctx, "presence", &pos)
	return pos, err
}

// ChangedForUser returns presence changes after since (up to upTo) of the users who
// share a joined room with userID, the user included.
func (s *Service) ChangedForUser(ctx context.Context, userID string, since, upTo int64) ([]Status, error) {
	if s.cfg.Disabled {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.stream_pos FROM presence p
		WHERE p.stream_pos > $2 AND p.stream_pos <= $3 AND (p.user_id = $1 OR p.user_id IN (`+rooms.SharedRoomMembersSQL("$1")+`))
		ORDER BY p.stream_pos`, userID, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("presence changes for %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Status
	for rows.Next() {
		var st Status
		var msg sql.NullString
		var lastActive int64
		if err := rows.Scan(&st.UserID, &st.Presence, &msg, &lastActive, &st.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, derive(st, msg, lastActive))
	}
	return out, rows.Err()
}
