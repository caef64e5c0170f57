// Package typing tracks who is typing in which room. The state is in memory and
// shared between nodes through the bus: every node applies every typing notice,
// including its own, so all nodes converge.
package typing

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Subject is the NATS subject typing changes travel on.
const Subject = "hongyan.typing"

// MaxTimeout bounds how long one typing notification lasts.
const MaxTimeout = 2 * time.Minute

// Notice is a typing change as it travels on the bus.
type Notice struct {
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Typing   bool   `json:"typing"`
	ExpireMs int64  `json:"expire_ms"`
}

// Service holds the typing state.
type Service struct {
	nc  *nats.Conn
	sub *nats.Subscription

	mu    sync.Mutex
	pos   int64                           // bumped on every change; guarded by mu
	rooms map[string]map[string]time.Time // room → user → expiry; guarded by mu
	moved map[string]int64                // room → position of its last change; guarded by mu
}

// New subscribes to typing notices on nc.
func New(nc *nats.Conn) (*Service, error) {
	s := &Service{nc: nc, rooms: map[string]map[string]time.Time{}, moved: map[string]int64{}}
	sub, err := nc.Subscribe(Subject, func(m *nats.Msg) {
		var n Notice
		if json.Unmarshal(m.Data, &n) == nil {
			s.apply(n)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", Subject, err)
	}
	s.sub = sub
	return s, nil
}

// Close unsubscribes.
func (s *Service) Close() { s.sub.Unsubscribe() }

// Set announces that user is (or stopped) typing in room for timeout.
func (s *Service) Set(roomID, userID string, typing bool, timeout time.Duration) error {
	if timeout <= 0 || timeout > MaxTimeout {
		timeout = MaxTimeout
	}
	n := Notice{RoomID: roomID, UserID: userID, Typing: typing, ExpireMs: time.Now().Add(timeout).UnixMilli()}
	data, _ := json.Marshal(n)
	if err := s.nc.Publish(Subject, data); err != nil {
		return fmt.Errorf("publish typing: %w", err)
	}
	return nil
}

func (s *Service) apply(n Notice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	users := s.rooms[n.RoomID]
	if users == nil {
		users = map[string]time.Time{}
		s.rooms[n.RoomID] = users
	}
	if n.Typing {
		users[n.UserID] = time.UnixMilli(n.ExpireMs)
	} else {
		delete(users, n.UserID)
	}
	s.pos++
	s.moved[n.RoomID] = s.pos
}

// Position is this node's typing position. Positions are per node: a since token
// carried to another node may show or repeat a typing update, which is harmless for
// state that is replaced wholesale.
func (s *Service) Position() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire()
	return s.pos
}

// expire drops typing users whose time ran out, moving the room's position. mu must
// be held.
func (s *Service) expire() {
	now := time.Now()
	for room, users := range s.rooms {
		for u, exp := range users {
			if now.After(exp) {
				delete(users, u)
				s.pos++
				s.moved[room] = s.pos
			}
		}
	}
}

// Changed returns the typing users of each room whose typing changed after since.
func (s *Service) Changed(roomIDs []string, since int64) map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire()
	out := map[string][]string{}
	for _, r := range roomIDs {
		if s.moved[r] > since {
			users := []string{}
			for u := range s.rooms[r] {
				users = append(users, u)
			}
			slices.Sort(users)
			out[r] = users
		}
	}
	return out
}
