package clientsync

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// Notifier wakes waiting syncs when anything they follow may have changed. It listens
// on the bus, so a sync waiting on one node wakes for a write on another.
type Notifier struct {
	mu   sync.Mutex
	wake chan struct{} // closed and replaced on every notice; guarded by mu
	subs []*nats.Subscription
}

// NewNotifier subscribes to the given subjects on nc.
func NewNotifier(nc *nats.Conn, subjects ...string) (*Notifier, error) {
	n := &Notifier{wake: make(chan struct{})}
	for _, subj := range subjects {
		sub, err := nc.Subscribe(subj, func(*nats.Msg) { n.Wake() })
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("subscribe %s: %w", subj, err)
		}
		n.subs = append(n.subs, sub)
	}
	return n, nil
}

// Wait returns a channel that is closed at the next notice. Take it before reading
// the database, so a notice that arrives during the read is not missed.
func (n *Notifier) Wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.wake
}

// Wake wakes everyone waiting.
func (n *Notifier) Wake() {
	n.mu.Lock()
	close(n.wake)
	n.wake = make(chan struct{})
	n.mu.Unlock()
}

// Close unsubscribes.
func (n *Notifier) Close() {
	for _, s := range n.subs {
		s.Unsubscribe()
	}
}
