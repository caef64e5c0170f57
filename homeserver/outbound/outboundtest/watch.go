// Package outboundtest holds what tests of outbound requests share: a listener
// that proves nothing connected to it.
package outboundtest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Watched is a loopback listener that accepts and counts connections: the
// target of a request that must never connect. Its connections are closed at
// once.
type Watched struct {
	// Addr is HOST:PORT of the listener.
	Addr string

	ln       net.Listener
	mu       sync.Mutex
	accepted []net.Addr // remote addresses, in accept order
	changed  chan struct{}
}

// Watch listens on network ("tcp4" or "tcp6") at a free port of host
// ("127.0.0.1", "::1") until the test ends.
func Watch(t testing.TB, network, host string) *Watched {
	t.Helper()
	ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("watch %s %s: %v", network, host, err)
	}
	w := &Watched{Addr: ln.Addr().String(), ln: ln, changed: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.accepted = append(w.accepted, c.RemoteAddr())
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
			c.Close()
		}
	}()
	return w
}

// Port is the listener's port.
func (w *Watched) Port() int { return w.ln.Addr().(*net.TCPAddr).Port }

// Accepted returns how many connections reached the listener before now. It
// connects once itself and waits until that probe is accepted: connections are
// accepted in the order they complete, so every earlier one has been counted by
// then, with no sleeping. The probe is not counted.
func (w *Watched) Accepted(t testing.TB) int {
	t.Helper()
	probe, err := net.Dial(w.ln.Addr().Network(), w.Addr)
	if err != nil {
		t.Fatalf("probe %s: %v", w.Addr, err)
	}
	defer probe.Close()
	mine := probe.LocalAddr().String()
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		changed := w.changed
		for i, a := range w.accepted {
			if a.String() == mine {
				n := i
				w.accepted = append(w.accepted[:i:i], w.accepted[i+1:]...) // forget the probe
				w.mu.Unlock()
				return n
			}
		}
		w.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("probe of %s not accepted within 10s", w.Addr)
		}
	}
}
