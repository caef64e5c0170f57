package federation

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/typing"
)

// The sender delivers this server's events and EDUs to other servers.
//
// Durability: a scanner walks the events stream through the room engine
// (rooms.Service.EventsSince) from a cursor kept in federation's own table (the
// federation_cursor row 'federation_out') and, in one transaction, queues each local
// event for the servers in its room and moves the cursor. Bus notices only wake it, so an event
// committed just before a crash is still queued after the restart. Each destination
// has one worker that sends its queue in order, in transactions of at most 50 PDUs
// and 100 EDUs, deletes what the destination acknowledged, and backs off
// exponentially while the destination is down, without holding up any other.
type sender struct {
	s      *Service
	node   string // this process, for destination leases
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	subs   []*nats.Subscription
	wg     sync.WaitGroup

	mu sync.Mutex
	// dests holds a worker per destination with work, guarded by mu. A worker
	// idle for idleAfter leaves it (retire), so the map and its goroutines stay
	// bounded by the destinations sent to lately, not every server ever named.
	dests map[string]*destination
	// idleAfter is how long a worker waits for work before it ends. Zero means
	// defaultIdleAfter.
	idleAfter time.Duration

	// servers caches each room's servers for the scanner (its goroutine only): a
	// room's membership changes only with its member events, which the scanner
	// sees in order, so it drops a room's entry when it meets one. Without it every
	// message in a 10 000-member room would read the whole member list.
	servers map[string][]string
}

type destination struct {
	name    string
	wake    chan struct{}
	backoff time.Duration // guarded by sender.mu
}

func newSender(ctx context.Context, s *Service) (*sender, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	nodeID := make([]byte, 9)
	rand.Read(nodeID)
	snd := &sender{s: s, node: base64.RawURLEncoding.EncodeToString(nodeID), ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), dests: map[string]*destination{}, servers: map[string][]string{}}
	if err := snd.initCursor(ctx); err != nil {
		cancel()
		return nil, err
	}
	if bus := s.deps.Bus; bus != nil {
		for subject, fn := range map[string]nats.MsgHandler{
			rooms.NoticeSubject: func(*nats.Msg) { snd.poke() },
			typing.Subject:      snd.onTyping,
			receipts.Subject:    snd.onReceipt,
			e2ee.Subject:        snd.onDeviceList,
			presence.Subject:    snd.onPresence,
		} {
			sub, err := bus.Subscribe(subject, fn)
			if err != nil {
				snd.close()
				return nil, fmt.Errorf("subscribe %s: %w", subject, err)
			}
			snd.subs = append(snd.subs, sub)
		}
	}
	snd.wg.Add(1)
	go snd.scan()
	// Destinations with work left from before a restart start at once.
	rows, err := s.deps.DB.Query(ctx, `SELECT DISTINCT destination FROM federation_queue`)
	if err == nil {
		var names []string
		for rows.Next() {
			var d string
			if rows.Scan(&d) == nil {
				names = append(names, d)
			}
		}
		rows.Close()
		for _, d := range names {
			snd.kick(d)
		}
	}
	return snd, nil
}

func (snd *sender) close() {
	for _, sub := range snd.subs {
		sub.Unsubscribe()
	}
	snd.cancel()
	snd.wg.Wait()
	// Another node may take this one's destinations at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snd.s.deps.DB.Exec(ctx, `DELETE FROM federation_leases WHERE node = $1`, snd.node)
}

// leaseFor is how long a destination lease lasts without renewal.
const leaseFor = 30 * time.Second

// lease takes or renews this node's lease on a destination; false means another
// node holds it.
func (snd *sender) lease(ctx context.Context, dest string) (bool, error) {
	now := time.Now()
	res, err := snd.s.deps.DB.Exec(ctx, `INSERT INTO federation_leases (destination, node, until_ts) VALUES ($1, $2, $3)
		ON CONFLICT (destination) DO UPDATE SET node = excluded.node, until_ts = excluded.until_ts
		WHERE federation_leases.node = excluded.node OR federation_leases.until_ts < $4`,
		dest, snd.node, now.Add(leaseFor).UnixMilli(), now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", dest, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// initCursor starts a new database's cursor at the current end of the events
// stream: history from before federation existed is not sent anywhere. An event
// committed between reading the end and inserting the cursor lies after it, so it
// is sent, not lost.
func (snd *sender) initCursor(ctx context.Context) error {
	end, err := snd.s.deps.Rooms.LatestPosition(ctx)
	if err != nil {
		return fmt.Errorf("federation cursor: %w", err)
	}
	_, err = snd.s.deps.DB.Exec(ctx, `INSERT INTO federation_cursor (name, pos) VALUES ('federation_out', $1)
		ON CONFLICT (name) DO NOTHING`, end)
	if err != nil {
		return fmt.Errorf("federation cursor: %w", err)
	}
	return nil
}

func (snd *sender) poke() {
	select {
	case snd.wake <- struct{}{}:
	default:
	}
}

// scan queues new local events until the sender closes.
func (snd *sender) scan() {
	defer snd.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for {
			n, err := snd.scanOnce(snd.ctx)
			if err != nil {
				if snd.ctx.Err() == nil {
					snd.s.log.Warn("queue outgoing events", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
		}
		select {
		case <-snd.ctx.Done():
			return
		case <-snd.wake:
		case <-tick.C:
		}
	}
}

// scanOnce queues the next batch of events after the cursor and returns how many
// it looked at.
func (snd *sender) scanOnce(ctx context.Context) (int, error) {
	db := snd.s.deps.DB
	var queued []string
	var joins []joinSeen
	n := 0
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		queued, joins, n = queued[:0], joins[:0], 0
		var cursor int64
		// The no-op update locks the cursor row: one node scans at a time.
		if err := tx.QueryRow(ctx, `UPDATE federation_cursor SET pos = pos WHERE name = 'federation_out' RETURNING pos`).Scan(&cursor); err != nil {
			return fmt.Errorf("lock federation cursor: %w", err)
		}
		evs, err := snd.s.deps.Rooms.EventsSince(ctx, cursor, 100)
		if err != nil {
			return err
		}
		n = len(evs)
		for _, r := range evs {
			cursor = r.Pos
			if r.Type == spec.MRoomMember && r.Membership == spec.Join && !strings.HasSuffix(r.StateKey, ":"+snd.s.cfg.ServerName) {
				joins = append(joins, joinSeen{room: r.RoomID, user: r.StateKey})
			}
			if r.StateReplaced {
				// Built on state the engine replaced wholesale (a join through
				// another server, a resolved fork): the members may all have changed.
				delete(snd.servers, r.RoomID)
			} else if r.Type == spec.MRoomMember {
				// A join adds its server; anything else may remove one: read again.
				_, srv, _ := strings.Cut(r.StateKey, ":")
				if cached, ok := snd.servers[r.RoomID]; ok && r.Membership == spec.Join {
					if !slices.Contains(cached, srv) {
						snd.servers[r.RoomID] = append(cached, srv)
					}
				} else {
					delete(snd.servers, r.RoomID)
				}
			}
			if !strings.HasSuffix(r.Sender, ":"+snd.s.cfg.ServerName) {
				continue // other servers' events are their servers' to send
			}
			dests, ok := snd.servers[r.RoomID]
			if !ok {
				// The servers in the room at this event, not now: a server that
				// joined later must not be sent what came before it.
				var err error
				if dests, err = snd.s.deps.Rooms.ServersAt(ctx, r.EventID); err != nil {
					return err
				}
				if len(snd.servers) > 10_000 {
					clear(snd.servers)
				}
				snd.servers[r.RoomID] = dests
			}
			dests = slices.Clone(dests)
			if r.Type == spec.MRoomMember && r.Membership == spec.Join && r.HasStateKey && r.StateKey == r.Sender {
				// A local user's join: the servers in the room then hear their presence.
				joins = append(joins, joinSeen{room: r.RoomID, user: r.StateKey, dests: dests})
			}
			// A rescinded invite reaches the invited user's server, which is not
			// in the room (kicks and bans reach the target's server as a server
			// in the room before the event). Invites themselves go by /invite,
			// not in transactions: as with Synapse, a server not in the room is
			// never sent the room's events.
			if r.Type == spec.MRoomMember && r.HasStateKey && r.Membership == spec.Leave && r.Sender != r.StateKey {
				if _, srv, ok := strings.Cut(r.StateKey, ":"); ok {
					dests = append(dests, srv)
				}
			}
			ev, err := snd.s.deps.Rooms.PDU(ctx, r.EventID)
			if err != nil {
				return err
			}
			for _, d := range unique(dests) {
				if d == snd.s.cfg.ServerName {
					continue
				}
				if err := insertQueue(ctx, tx, d, "pdu", ev.JSON()); err != nil {
					return err
				}
				queued = append(queued, d)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE federation_cursor SET pos = $1 WHERE name = 'federation_out'`, cursor)
		return err
	})
	if err != nil {
		return 0, err
	}
	for _, d := range unique(queued) {
		snd.kick(d)
	}
	snd.presenceOnJoins(ctx, joins)
	snd.deviceListsOnJoins(ctx, joins)
	return n, nil
}

// deviceListsOnJoins marks the kept device lists of other servers' users stale
// when they start sharing a room with this server again — a remote user joining,
// or a local user joining a room with remote members — since updates sent while
// no room was shared never reached us.
func (snd *sender) deviceListsOnJoins(ctx context.Context, joins []joinSeen) {
	for _, j := range joins {
		var remote []string
		if strings.HasSuffix(j.user, ":"+snd.s.cfg.ServerName) {
			if len(j.dests) == 0 {
				continue // a room with no other server
			}
			members, err := snd.s.deps.Rooms.JoinedUserIDs(ctx, j.room)
			if err != nil {
				continue
			}
			remote = slices.DeleteFunc(members, func(m string) bool { return strings.HasSuffix(m, ":"+snd.s.cfg.ServerName) })
		} else {
			remote = []string{j.user}
		}
		if err := snd.s.deps.E2EE.DeviceListsMaybeChanged(ctx, remote); err != nil {
			snd.s.log.Warn("mark device lists stale", "err", err)
		}
	}
}

// joinSeen is a join the scanner passed: a remote user's, or a local user's with
// the servers in the room at it.
type joinSeen struct {
	room, user string
	dests      []string
}

// presenceOnJoins tells servers newly sharing a room the presence they have not
// heard, as Synapse does: a remote user's join brings its server the presence of
// this server's members of the room, a local user's join takes that user's
// presence to the servers in the room at the join. Without it two users who just
// started sharing a room would see each other's presence only at its next change.
// Offline users are left out: that is what a server assumes of a user it has not
// heard of.
func (snd *sender) presenceOnJoins(ctx context.Context, joins []joinSeen) {
	if snd.s.deps.Presence == nil {
		return
	}
	for _, j := range joins {
		dests, users := j.dests, []string{j.user}
		if !strings.HasSuffix(j.user, ":"+snd.s.cfg.ServerName) {
			members, err := snd.s.deps.Rooms.JoinedUserIDs(ctx, j.room)
			if err != nil {
				continue
			}
			users = users[:0]
			for _, m := range members {
				if strings.HasSuffix(m, ":"+snd.s.cfg.ServerName) && len(users) < maxPresenceOnJoin {
					users = append(users, m)
				}
			}
			_, srv, _ := strings.Cut(j.user, ":")
			dests = []string{srv}
		}
		dests = slices.DeleteFunc(dests, func(d string) bool { return d == snd.s.cfg.ServerName })
		if len(dests) == 0 || len(users) == 0 {
			continue
		}
		var pushes []any
		for _, u := range users {
			if st, err := snd.s.deps.Presence.Get(ctx, u); err == nil && st.Presence != presence.Offline {
				pushes = append(pushes, presencePush(u, st))
			}
		}
		for start := 0; start < len(pushes); start += 100 {
			if err := snd.queueEDUTo(ctx, dests, spec.MPresence, map[string]any{"push": pushes[start:min(start+100, len(pushes))]}); err != nil {
				snd.s.log.Warn("queue presence", "err", err)
			}
		}
	}
}

// maxPresenceOnJoin bounds the presence sent for one join of another server's
// user into a room with many of ours.
const maxPresenceOnJoin = 500

// presencePush is a user's presence as an m.presence EDU carries it.
func presencePush(userID string, st presence.Status) map[string]any {
	push := map[string]any{"user_id": userID, "presence": st.Presence, "last_active_ago": st.LastActiveAgo, "currently_active": st.CurrentlyActive}
	if st.StatusMsg != nil {
		push["status_msg"] = *st.StatusMsg
	}
	return push
}

func insertQueue(ctx context.Context, tx *storage.Tx, dest, kind string, data []byte) error {
	if _, err := tx.Exec(ctx, `INSERT INTO federation_queue (destination, kind, json, created_ts) VALUES ($1, $2, $3, $4)`,
		dest, kind, string(data), time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("queue for %s: %w", dest, err)
	}
	return nil
}

// queuePDU queues an event for destinations directly, durable before it returns:
// for joins and leaves other servers made through us, which the room's other
// servers learn of from us.
func (snd *sender) queuePDU(ctx context.Context, dests []string, ev gomatrixserverlib.PDU) error {
	if len(dests) == 0 {
		return nil
	}
	err := snd.s.deps.DB.WithTx(ctx, func(tx *storage.Tx) error {
		for _, d := range unique(dests) {
			if err := insertQueue(ctx, tx, d, "pdu", ev.JSON()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, d := range dests {
		snd.kick(d)
	}
	return nil
}

// queueEDU queues an EDU for the room's other servers.
func (snd *sender) queueEDU(ctx context.Context, roomID, typ string, content any) {
	servers, err := snd.s.deps.Rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		return
	}
	servers = slices.DeleteFunc(servers, func(d string) bool { return d == snd.s.cfg.ServerName })
	if err := snd.queueEDUTo(ctx, servers, typ, content); err != nil {
		snd.s.log.Warn("queue EDU", "type", typ, "err", err)
	}
}

// queueEDUTo queues an EDU for destinations, durably in one transaction, and wakes
// their workers.
func (snd *sender) queueEDUTo(ctx context.Context, dests []string, typ string, content any) error {
	data, err := json.Marshal(content)
	if err != nil {
		return err
	}
	err = snd.s.deps.DB.WithTx(ctx, func(tx *storage.Tx) error {
		for _, d := range dests {
			edu, _ := json.Marshal(gomatrixserverlib.EDU{Type: typ, Origin: snd.s.cfg.ServerName, Destination: d, Content: data})
			if err := insertQueue(ctx, tx, d, "edu", edu); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, d := range dests {
		snd.kick(d)
	}
	return nil
}

func (snd *sender) onTyping(m *nats.Msg) {
	var n typing.Notice
	if json.Unmarshal(m.Data, &n) != nil || !strings.HasSuffix(n.UserID, ":"+snd.s.cfg.ServerName) || !snd.firstNode(m) {
		return
	}
	snd.queueEDU(snd.ctx, n.RoomID, spec.MTyping, map[string]any{"room_id": n.RoomID, "user_id": n.UserID, "typing": n.Typing})
}

func (snd *sender) onReceipt(m *nats.Msg) {
	var n receipts.Notice
	if json.Unmarshal(m.Data, &n) != nil || !snd.firstNode(m) {
		return
	}
	recs, err := snd.s.deps.Receipts.Since(snd.ctx, []string{n.RoomID}, "", n.StreamPos-1, n.StreamPos)
	if err != nil {
		return
	}
	for _, r := range recs[n.RoomID] {
		if r.Type != "m.read" || !strings.HasSuffix(r.UserID, ":"+snd.s.cfg.ServerName) {
			continue
		}
		data := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			data["thread_id"] = r.ThreadID
		}
		snd.queueEDU(snd.ctx, r.RoomID, spec.MReceipt, map[string]any{r.RoomID: map[string]any{"m.read": map[string]any{
			r.UserID: map[string]any{"event_ids": []string{r.EventID}, "data": data}}}})
	}
}

// firstNode is where several nodes would agree on which of them turns a bus notice
// into an EDU; with one node (all this supports yet) it is always this one.
func (snd *sender) firstNode(*nats.Msg) bool { return true }

// defaultIdleAfter is how long a destination's worker lingers without work.
const defaultIdleAfter = 10 * time.Minute

// kick makes sure the destination's worker runs and wakes it. The wake is sent
// with mu held, so a worker retiring (which checks for a wake under mu) either
// sees it or has already left the map, and then a new worker starts here.
func (snd *sender) kick(name string) {
	snd.mu.Lock()
	defer snd.mu.Unlock()
	d, ok := snd.dests[name]
	if !ok {
		d = &destination{name: name, wake: make(chan struct{}, 1)}
		snd.dests[name] = d
		snd.wg.Add(1)
		go snd.run(d)
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// retire removes an idle worker's destination unless it was woken meanwhile,
// and reports whether it did.
func (snd *sender) retire(d *destination) bool {
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if len(d.wake) > 0 {
		return false
	}
	delete(snd.dests, d.name)
	return true
}

// alive resets a destination's backoff: it just talked to us.
func (snd *sender) alive(name string) {
	snd.mu.Lock()
	d, ok := snd.dests[name]
	if ok && d.backoff > 0 {
		d.backoff = 0
		snd.mu.Unlock()
		snd.kick(name)
		return
	}
	snd.mu.Unlock()
}

// release gives up this node's lease on a destination.
func (snd *sender) release(dest string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(snd.ctx), 5*time.Second)
	defer cancel()
	if _, err := snd.s.deps.DB.Exec(ctx, `DELETE FROM federation_leases WHERE destination = $1 AND node = $2`, dest, snd.node); err != nil {
		snd.s.log.Warn("release destination lease", "destination", dest, "err", err)
	}
}

// run sends one destination's queue until it is empty, then waits for more; after
// idleAfter with nothing to send it ends.
func (snd *sender) run(d *destination) {
	defer snd.wg.Done()
	idleAfter := snd.idleAfter
	if idleAfter == 0 {
		idleAfter = defaultIdleAfter
	}
	busy := time.Now() // when there was last work (or a failure to do it)
	for {
		var sent bool
		leased, err := snd.lease(snd.ctx, d.name)
		if err == nil && !leased {
			// Another node sends this destination; look again when its lease
			// would have run out.
			select {
			case <-snd.ctx.Done():
				return
			case <-time.After(leaseFor / 2):
			}
			continue
		}
		if err == nil {
			sent, err = snd.sendOnce(d)
		}
		var wait time.Duration
		switch {
		case err != nil:
			snd.mu.Lock()
			d.backoff = min(max(2*d.backoff, time.Second), snd.s.cfg.RetryMax)
			wait = d.backoff
			snd.mu.Unlock()
			snd.s.log.Info("destination unreachable", "destination", d.name, "retry_in", wait, "err", err)
			busy = time.Now()
		case sent:
			snd.mu.Lock()
			d.backoff = 0
			snd.mu.Unlock()
			busy = time.Now()
			continue // more may be queued
		case time.Since(busy) >= idleAfter && snd.retire(d):
			// Released, so another node's scanner that queues work for this
			// destination has its own worker send it at once.
			snd.release(d.name)
			return
		default:
			// Idle until kicked — or until another node's scanner may have queued
			// work for a destination this node holds the lease on.
			wait = leaseFor / 2
		}
		timer := time.NewTimer(wait)
		select {
		case <-snd.ctx.Done():
			timer.Stop()
			return
		case <-d.wake:
			snd.mu.Lock()
			backingOff := d.backoff > 0
			snd.mu.Unlock()
			if backingOff && err != nil {
				// New work does not cut a backoff short; alive() does.
				select {
				case <-timer.C:
				case <-snd.ctx.Done():
					return
				}
			}
			timer.Stop()
		case <-timer.C:
		}
	}
}

// sendOnce sends the head of the destination's queue as one transaction. It
// reports whether anything was sent.
func (snd *sender) sendOnce(d *destination) (bool, error) {
	ctx := snd.ctx
	rows, err := snd.s.deps.DB.Query(ctx, `SELECT id, kind, json FROM federation_queue WHERE destination = $1 ORDER BY id LIMIT 150`, d.name)
	if err != nil {
		return false, err
	}
	var ids []int64
	var pdus []json.RawMessage
	var edus []gomatrixserverlib.EDU
	for rows.Next() {
		var id int64
		var kind, data string
		if err := rows.Scan(&id, &kind, &data); err != nil {
			rows.Close()
			return false, err
		}
		if kind == "pdu" {
			if len(pdus) == maxTxnPDUs {
				continue
			}
			pdus = append(pdus, json.RawMessage(data))
		} else {
			if len(edus) == maxTxnEDUs {
				continue
			}
			var e gomatrixserverlib.EDU
			if json.Unmarshal([]byte(data), &e) != nil {
				ids = append(ids, id) // unreadable: drop it
				continue
			}
			edus = append(edus, e)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	if len(ids) == 0 {
		return false, nil
	}
	if len(pdus) > 0 || len(edus) > 0 {
		// The same rows make the same ID, so a retry after a lost answer is
		// recognised by the destination as a transaction it already has.
		txn := gomatrixserverlib.Transaction{
			TransactionID:  gomatrixserverlib.TransactionID(strconv.FormatInt(ids[0], 10) + "-" + strconv.FormatInt(ids[len(ids)-1], 10) + "-" + strconv.Itoa(len(ids))),
			Origin:         spec.ServerName(snd.s.cfg.ServerName),
			Destination:    spec.ServerName(d.name),
			OriginServerTS: spec.AsTimestamp(time.Now()),
			PDUs:           pdus,
			EDUs:           edus,
		}
		sendCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := snd.s.client.SendTransaction(sendCtx, txn)
		cancel()
		if err != nil {
			return false, err
		}
	}
	args := make([]any, len(ids))
	marks := make([]string, len(ids))
	for i, id := range ids {
		args[i] = id
		marks[i] = "$" + strconv.Itoa(i+1)
	}
	if _, err := snd.s.deps.DB.Exec(ctx, `DELETE FROM federation_queue WHERE id IN (`+strings.Join(marks, ", ")+`)`, args...); err != nil {
		return false, err
	}
	return true, nil
}

func unique(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// onPresence tells the servers sharing a room with a local user about the user's
// new presence (m.presence).
func (snd *sender) onPresence(m *nats.Msg) {
	var n struct {
		UserID string `json:"user_id"`
	}
	if json.Unmarshal(m.Data, &n) != nil || !strings.HasSuffix(n.UserID, ":"+snd.s.cfg.ServerName) || snd.s.deps.Presence == nil {
		return
	}
	st, err := snd.s.deps.Presence.Get(snd.ctx, n.UserID)
	if err != nil {
		return
	}
	servers, err := snd.s.deps.Rooms.ServersSharing(snd.ctx, n.UserID)
	if err != nil {
		return
	}
	if err := snd.queueEDUTo(snd.ctx, servers, spec.MPresence, map[string]any{"push": []any{presencePush(n.UserID, st)}}); err != nil {
		snd.s.log.Warn("queue presence", "err", err)
	}
}
