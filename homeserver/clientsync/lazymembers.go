package clientsync

import (
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/rooms"
)

// lazyMembers remembers, per device, the member events a lazy-loading /sync sent,
// so that the next incremental sync does not send them again (the spec's
// include_redundant_members false, the default). Like Synapse's cache it lives in
// memory on the node that answered: a device that syncs on another node, or after
// a restart, is sent some members twice, which is harmless; it is never sent too
// few, because an entry counts only once the client has shown it has the response
// (its next since token reaches that response's position). A retried sync from an
// older token therefore gets the members again.
type lazyMembers struct {
	mu sync.Mutex
	// devices is keyed by user and device; guarded by mu. Bounded by maxLazyDevices
	// devices and maxLazyEntries entries per device: past either, a device's
	// memory is dropped and some members are sent again.
	devices map[string]*lazyDevice
}

type lazyDevice struct {
	n     int
	rooms map[string]map[string]lazySent // room -> state key -> sent
}

// lazySent is one member event sent to a device and the events position of the
// response that carried it.
type lazySent struct {
	eventID string
	at      int64
}

const (
	maxLazyDevices = 20000
	maxLazyEntries = 20000
)

func newLazyMembers() *lazyMembers { return &lazyMembers{devices: map[string]*lazyDevice{}} }

func lazyKey(userID, deviceID string) string { return userID + "\x00" + deviceID }

// reset forgets what the device was sent: an initial sync starts it afresh.
func (l *lazyMembers) reset(userID, deviceID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.devices, lazyKey(userID, deviceID))
}

// known reports whether the device already holds member event ev of roomID: it was
// sent in a response at or before the since position the device syncs from.
func (l *lazyMembers) known(userID, deviceID, roomID string, since int64, ev rooms.ClientEvent) bool {
	if ev.StateKey == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.devices[lazyKey(userID, deviceID)]
	if d == nil {
		return false
	}
	sent, ok := d.rooms[roomID][*ev.StateKey]
	return ok && sent.eventID == ev.EventID && sent.at <= since
}

// record notes the member events among events as sent in a response at position at.
func (l *lazyMembers) record(userID, deviceID, roomID string, at int64, events ...[]rooms.ClientEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := lazyKey(userID, deviceID)
	d := l.devices[key]
	if d == nil {
		if len(l.devices) >= maxLazyDevices {
			clear(l.devices)
		}
		d = &lazyDevice{rooms: map[string]map[string]lazySent{}}
		l.devices[key] = d
	}
	for _, list := range events {
		for _, ev := range list {
			if ev.Type != spec.MRoomMember || ev.StateKey == nil {
				continue
			}
			room := d.rooms[roomID]
			if room == nil {
				room = map[string]lazySent{}
				d.rooms[roomID] = room
			}
			prev, had := room[*ev.StateKey]
			if had && prev.eventID == ev.EventID && prev.at <= at {
				continue // already sent; the earlier response is what counts
			}
			if !had {
				d.n++
			}
			room[*ev.StateKey] = lazySent{eventID: ev.EventID, at: at}
		}
	}
	if d.n > maxLazyEntries {
		delete(l.devices, key)
	}
}
