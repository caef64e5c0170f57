package appservice

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/typing"
)

// The sender pushes each application service the events of its namespaces.
//
// Durability, as federation's sender: each service has a worker that walks the
// events stream through the room engine (rooms.Service.EventsSince) from the
// service's own cursor (appservice_state.pos) and, in one transaction, queues the
// events the service is interested in (appservice_queue) and moves the cursor.
// Bus notices only wake it, so an event committed just before a crash is queued
// after the restart. The worker then takes the head of the queue, at most
// BatchSize events, and numbers it as one transaction (the rows' txn_id, from
// appservice_state.next_txn) before the first attempt; that transaction is sent
// with the same ID and the same events until the service answers 2xx, then
// deleted. So a service that was down gets everything, in order, once back; a
// retried transaction keeps its ID (the service deduplicates by it) and nothing
// is ever sent under two IDs. A service that is down backs off exponentially up
// to RetryMax; each service has its own worker, so one never holds up another.
type sender struct {
	s       *Service
	node    string // this process, for the services' leases
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	subs    []*nats.Subscription
	workers map[string]*worker // by service ID, fixed after newSender
}

// worker is one service's goroutine and what only it touches.
type worker struct {
	r    *Registration
	wake chan struct{}
	// leasedUntil is when this node's lease on the service ends (Unix ms), 0
	// when it holds none: only the holder queues ephemeral events.
	leasedUntil atomic.Int64
	// members caches, per room, whether a user of the service's namespace is
	// joined: dropped for a room at each of its member events, which the worker
	// meets in stream order (as federation's server cache).
	members map[string]bool
	// aliases caches, per room, whether it has an alias of the namespace, for
	// one scan of at most 100 events: aliases change without events, so an
	// entry cannot outlive the batch, but a busy room costs one read per batch,
	// not one per event.
	aliases map[string]bool
}

func newSender(ctx context.Context, s *Service) (*sender, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	nodeID := make([]byte, 9)
	rand.Read(nodeID)
	snd := &sender{s: s, node: base64.RawURLEncoding.EncodeToString(nodeID), ctx: ctx, cancel: cancel, workers: map[string]*worker{}}
	end, err := s.deps.Rooms.LatestPosition(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("appservice cursor: %w", err)
	}
	for _, r := range s.regs {
		// A new service starts at the stream's end: history from before it was
		// registered is not pushed.
		if _, err := s.deps.DB.Exec(ctx, `INSERT INTO appservice_state (as_id, pos) VALUES ($1, $2) ON CONFLICT (as_id) DO NOTHING`, r.ID, end); err != nil {
			cancel()
			return nil, fmt.Errorf("appservice %s cursor: %w", r.ID, err)
		}
		snd.workers[r.ID] = &worker{r: r, wake: make(chan struct{}, 1), members: map[string]bool{}, aliases: map[string]bool{}}
	}
	if bus := s.deps.Bus; bus != nil && len(s.regs) > 0 {
		for subject, fn := range map[string]nats.MsgHandler{
			rooms.NoticeSubject: func(*nats.Msg) { snd.pokeAll() },
			typing.Subject:      snd.onTyping,
			receipts.Subject:    snd.onReceipt,
			e2ee.Subject:        snd.onToDevice,
		} {
			sub, err := bus.Subscribe(subject, fn)
			if err != nil {
				snd.close()
				return nil, fmt.Errorf("subscribe %s: %w", subject, err)
			}
			snd.subs = append(snd.subs, sub)
		}
	}
	for _, w := range snd.workers {
		snd.wg.Add(1)
		go snd.run(w)
	}
	return snd, nil
}

func (snd *sender) close() {
	for _, sub := range snd.subs {
		sub.Unsubscribe()
	}
	snd.cancel()
	snd.wg.Wait()
	// Another node may take this one's services at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snd.s.deps.DB.Exec(ctx, `UPDATE appservice_state SET lease_until = 0 WHERE lease_node = $1`, snd.node)
}

// leaseFor is how long a service's lease lasts without renewal; the worker
// renews it at least every leaseFor/3.
const leaseFor = 30 * time.Second

// takeLease takes or renews node's lease on service asID; false means another
// node holds it.
func takeLease(ctx context.Context, db *storage.DB, asID, node string, now time.Time) (bool, error) {
	res, err := db.Exec(ctx, `UPDATE appservice_state SET lease_node = $1, lease_until = $2
		WHERE as_id = $3 AND (lease_node = $1 OR lease_until < $4)`, node, now.Add(leaseFor).UnixMilli(), asID, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("appservice %s lease: %w", asID, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// holds reports whether this node holds the service's lease now.
func (w *worker) holds() bool { return time.Now().UnixMilli() < w.leasedUntil.Load() }

func (snd *sender) pokeAll() {
	for _, w := range snd.workers {
		w.poke()
	}
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run queues and sends one service's events until the sender closes. Every
// node scans (the scan is serialised by the state row's lock); only the node
// holding the service's lease sends.
func (snd *sender) run(w *worker) {
	defer snd.wg.Done()
	log := snd.s.log.With("appservice", w.r.ID)
	var backoff time.Duration
	var nextAttempt time.Time // while backing off, no send before it
	for {
		now := time.Now()
		leased, err := takeLease(snd.ctx, snd.s.deps.DB, w.r.ID, snd.node, now)
		if err != nil && snd.ctx.Err() == nil {
			log.Warn("application service lease", "err", err)
		}
		if leased {
			w.leasedUntil.Store(now.Add(leaseFor).UnixMilli())
		} else {
			w.leasedUntil.Store(0)
		}
		for {
			n, err := snd.scanOnce(snd.ctx, w)
			if err != nil {
				if snd.ctx.Err() == nil {
					log.Warn("queue events for application service", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
		}
		// A look at the stream and the lease now and then, in case a wake-up
		// was missed or another node's lease ran out.
		wait := 5 * time.Second
		if leased && w.r.URL != "" && !time.Now().Before(nextAttempt) {
			sent, err := snd.sendOnce(snd.ctx, w)
			switch {
			case err != nil && snd.ctx.Err() == nil:
				backoff = min(max(2*backoff, time.Second), snd.s.cfg.RetryMax)
				nextAttempt = time.Now().Add(backoff)
				log.Info("application service unreachable", "retry_in", backoff, "err", err)
			case sent:
				backoff, nextAttempt = 0, time.Time{}
				continue // more may be queued
			}
		}
		if !nextAttempt.IsZero() {
			// New work does not cut a backoff short, but the lease is
			// renewed meanwhile.
			wait = min(max(time.Until(nextAttempt), 10*time.Millisecond), leaseFor/3)
		}
		timer := time.NewTimer(wait)
		select {
		case <-snd.ctx.Done():
			timer.Stop()
			return
		case <-w.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// scanOnce queues the service's events among the next 100 of the stream and
// moves its cursor past them, in one transaction. It returns how many events it
// looked at.
func (snd *sender) scanOnce(ctx context.Context, w *worker) (int, error) {
	db := snd.s.deps.DB
	n := 0
	clear(w.aliases)
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		n = 0
		var cursor int64
		// The no-op update locks the row: one node scans a service at a time.
		if err := tx.QueryRow(ctx, `UPDATE appservice_state SET pos = pos WHERE as_id = $1 RETURNING pos`, w.r.ID).Scan(&cursor); err != nil {
			return fmt.Errorf("lock appservice cursor: %w", err)
		}
		evs, err := snd.s.deps.Rooms.EventsSince(ctx, cursor, 100)
		if err != nil {
			return err
		}
		n = len(evs)
		for _, e := range evs {
			cursor = e.Pos
			if e.Type == spec.MRoomMember || e.StateReplaced {
				delete(w.members, e.RoomID)
			}
			ok, err := snd.interested(ctx, w, e)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			ev, err := snd.s.deps.Rooms.PDU(ctx, e.EventID)
			if err != nil {
				return err
			}
			ce := map[string]any{"type": ev.Type(), "content": json.RawMessage(ev.Content()), "event_id": ev.EventID(),
				"sender": string(ev.SenderID()), "origin_server_ts": int64(ev.OriginServerTS()), "room_id": e.RoomID}
			if sk := ev.StateKey(); sk != nil {
				ce["state_key"] = *sk
			}
			if red := ev.Redacts(); red != "" {
				ce["redacts"] = red
			}
			if u := ev.Unsigned(); len(u) > 0 && json.Valid(u) {
				ce["unsigned"] = json.RawMessage(u)
			}
			if err := queue(ctx, tx, w.r.ID, "event", ce); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE appservice_state SET pos = $1 WHERE as_id = $2`, cursor, w.r.ID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("appservice %s: %w", w.r.ID, err)
	}
	return n, nil
}

func queue(ctx context.Context, q interface {
	Exec(ctx context.Context, query string, args ...any) (sql.Result, error)
}, asID, kind string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := q.Exec(ctx, `INSERT INTO appservice_queue (as_id, kind, json, created_ts) VALUES ($1, $2, $3, $4)`,
		asID, kind, string(data), time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("queue for appservice %s: %w", asID, err)
	}
	return nil
}

// interested reports whether the service wants the event, as the spec and
// Synapse decide it: its sender or (member event) target is in the user
// namespace, its room in the room namespace, one of the room's aliases in the
// alias namespace, or a user of the namespace is joined to the room.
func (snd *sender) interested(ctx context.Context, w *worker, e rooms.OutboundEvent) (bool, error) {
	r, server := w.r, snd.s.cfg.ServerName
	if e.Sender == r.SenderID(server) || snd.s.inUsers(r, e.Sender) {
		return true, nil
	}
	if e.Type == spec.MRoomMember && e.HasStateKey && (e.StateKey == r.SenderID(server) || snd.s.inUsers(r, e.StateKey)) {
		return true, nil
	}
	if m, _ := matchAny(r.Rooms, e.RoomID); m {
		return true, nil
	}
	return snd.roomInterests(ctx, w, e.RoomID)
}

// roomInterests reports whether the room has an alias of the service's alias
// namespace or a joined member of its user namespace.
func (snd *sender) roomInterests(ctx context.Context, w *worker, roomID string) (bool, error) {
	r := w.r
	if len(r.Aliases) > 0 {
		match, ok := w.aliases[roomID]
		if !ok {
			aliases, err := snd.s.deps.Rooms.Aliases(ctx, roomID)
			if err != nil {
				return false, err
			}
			for _, a := range aliases {
				if m, _ := matchAny(r.Aliases, a); m {
					match = true
					break
				}
			}
			w.aliases[roomID] = match
		}
		if match {
			return true, nil
		}
	}
	if v, ok := w.members[roomID]; ok {
		return v, nil
	}
	members, err := snd.s.deps.Rooms.JoinedUserIDs(ctx, roomID)
	if err != nil {
		return false, err
	}
	found := false
	for _, m := range members {
		if m == r.SenderID(snd.s.cfg.ServerName) || snd.s.inUsers(r, m) {
			found = true
			break
		}
	}
	if len(w.members) > 10_000 {
		clear(w.members)
	}
	w.members[roomID] = found
	return found, nil
}

// sendOnce sends the service's pending transaction, numbering the head of the
// queue as one first if none is pending. It reports whether it sent anything.
func (snd *sender) sendOnce(ctx context.Context, w *worker) (bool, error) {
	db := snd.s.deps.DB
	txnID, err := snd.pendingTxn(ctx, w)
	if err != nil || txnID == 0 {
		return false, err
	}
	rows, err := db.Query(ctx, `SELECT kind, json FROM appservice_queue WHERE as_id = $1 AND txn_id = $2 ORDER BY id`, w.r.ID, txnID)
	if err != nil {
		return false, err
	}
	events, ephemeral, toDevice := []json.RawMessage{}, []json.RawMessage{}, []json.RawMessage{}
	for rows.Next() {
		var kind, data string
		if err := rows.Scan(&kind, &data); err != nil {
			rows.Close()
			return false, err
		}
		switch kind {
		case "event":
			events = append(events, json.RawMessage(data))
		case "ephemeral":
			ephemeral = append(ephemeral, json.RawMessage(data))
		case "to_device":
			toDevice = append(toDevice, json.RawMessage(data))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	body := map[string]any{"events": events}
	if len(ephemeral) > 0 {
		body["ephemeral"] = ephemeral
		body["de.sorunome.msc2409.ephemeral"] = ephemeral
	}
	if len(toDevice) > 0 {
		body["to_device"] = toDevice
		body["de.sorunome.msc2409.to_device"] = toDevice
	}
	status, answer, err := snd.s.call(ctx, w.r, http.MethodPut, "/transactions/"+strconv.FormatInt(txnID, 10), nil, body)
	if err != nil {
		return false, err
	}
	if status/100 != 2 {
		return false, fmt.Errorf("transaction %d: status %d: %.200s", txnID, status, answer)
	}
	if _, err := db.Exec(ctx, `DELETE FROM appservice_queue WHERE as_id = $1 AND txn_id = $2`, w.r.ID, txnID); err != nil {
		return false, err
	}
	return true, nil
}

// pendingTxn returns the ID of the service's transaction in flight, numbering
// the head of its queue as a new one when none is; 0 when the queue is empty.
func (snd *sender) pendingTxn(ctx context.Context, w *worker) (int64, error) {
	var txnID int64
	err := snd.s.deps.DB.WithTx(ctx, func(tx *storage.Tx) error {
		txnID = 0
		err := tx.QueryRow(ctx, `SELECT txn_id FROM appservice_queue WHERE as_id = $1 AND txn_id IS NOT NULL ORDER BY id LIMIT 1`, w.r.ID).Scan(&txnID)
		if err == nil || !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var first int64
		err = tx.QueryRow(ctx, `SELECT id FROM appservice_queue WHERE as_id = $1 ORDER BY id LIMIT 1`, w.r.ID).Scan(&first)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `UPDATE appservice_state SET next_txn = next_txn + 1 WHERE as_id = $1 RETURNING next_txn - 1`, w.r.ID).Scan(&txnID); err != nil {
			return err
		}
		// The batch is the next BatchSize rows in order: ids are taken in
		// order within one service's queue, so a range of them is the head.
		var last int64
		if err := tx.QueryRow(ctx, `SELECT MAX(id) FROM (SELECT id FROM appservice_queue WHERE as_id = $1 ORDER BY id LIMIT $2) AS head`,
			w.r.ID, snd.s.cfg.BatchSize).Scan(&last); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE appservice_queue SET txn_id = $1 WHERE as_id = $2 AND id BETWEEN $3 AND $4`, txnID, w.r.ID, first, last)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("appservice %s: next transaction: %w", w.r.ID, err)
	}
	return txnID, nil
}

// ephemeralFor queues an ephemeral event for every service that receives them
// and is interested in the room.
func (snd *sender) ephemeralFor(roomID string, ev any) {
	for _, w := range snd.workers {
		if !w.r.ReceiveEphemeral || !w.holds() {
			continue // every node hears the notice; the lease holder queues it
		}
		// The room test reads the alias and member lists only; the worker's
		// member cache is its own, so this one is computed without it.
		ok, err := snd.roomInterestsUncached(snd.ctx, w.r, roomID)
		if err != nil || !ok {
			continue
		}
		if err := queue(snd.ctx, snd.s.deps.DB, w.r.ID, "ephemeral", ev); err != nil {
			snd.s.log.Warn("queue ephemeral event for application service", "appservice", w.r.ID, "err", err)
			continue
		}
		w.poke()
	}
}

func (snd *sender) roomInterestsUncached(ctx context.Context, r *Registration, roomID string) (bool, error) {
	if m, _ := matchAny(r.Rooms, roomID); m {
		return true, nil
	}
	tmp := &worker{r: r, members: map[string]bool{}, aliases: map[string]bool{}}
	return snd.roomInterests(ctx, tmp, roomID)
}

func (snd *sender) onTyping(m *nats.Msg) {
	var n typing.Notice
	if json.Unmarshal(m.Data, &n) != nil || snd.s.deps.Typing == nil {
		return
	}
	// The typing service applies the same notice on its own subscription,
	// maybe after this one: the notice's own change is applied here too.
	typers := []string{}
	for _, u := range snd.s.deps.Typing.Changed([]string{n.RoomID}, 0)[n.RoomID] {
		if u != n.UserID {
			typers = append(typers, u)
		}
	}
	if n.Typing {
		typers = append(typers, n.UserID)
	}
	snd.ephemeralFor(n.RoomID, map[string]any{"type": spec.MTyping, "room_id": n.RoomID, "content": map[string]any{"user_ids": typers}})
}

func (snd *sender) onReceipt(m *nats.Msg) {
	var n receipts.Notice
	if json.Unmarshal(m.Data, &n) != nil || snd.s.deps.Receipts == nil {
		return
	}
	recs, err := snd.s.deps.Receipts.Since(snd.ctx, []string{n.RoomID}, "", n.StreamPos-1, n.StreamPos)
	if err != nil {
		return
	}
	for _, r := range recs[n.RoomID] {
		if strings.HasSuffix(r.Type, ".private") {
			continue // private receipts are the user's alone
		}
		data := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			data["thread_id"] = r.ThreadID
		}
		snd.ephemeralFor(r.RoomID, map[string]any{"type": spec.MReceipt, "room_id": r.RoomID, "content": map[string]any{
			r.EventID: map[string]any{r.Type: map[string]any{r.UserID: data}}}})
	}
}

// onToDevice moves to-device messages for the devices of a service's users
// into the service's queue, for services that manage their users' devices
// (MSC3202) and receive ephemeral events (MSC2409): such a device has no client
// syncing, the service is its client. Each message is queued durably before it
// is taken from the device's inbox, so a crash in between delivers it twice at
// worst, never loses it.
func (snd *sender) onToDevice(m *nats.Msg) {
	var n e2ee.Notice
	if json.Unmarshal(m.Data, &n) != nil || n.DeviceList || snd.s.deps.E2EE == nil {
		return
	}
	for _, w := range snd.workers {
		r := w.r
		if !r.DeviceMasquerading || !r.ReceiveEphemeral || !w.holds() || (n.UserID != r.SenderID(snd.s.cfg.ServerName) && !snd.s.inUsers(r, n.UserID)) {
			continue
		}
		if err := snd.takeToDevice(snd.ctx, w, n.UserID); err != nil {
			snd.s.log.Warn("queue to-device messages for application service", "appservice", r.ID, "err", err)
		}
	}
}

func (snd *sender) takeToDevice(ctx context.Context, w *worker, userID string) error {
	local, ok := snd.s.deps.Users.LocalpartOf(userID)
	if !ok {
		return nil
	}
	devices, err := snd.s.deps.Users.Devices(ctx, local)
	if err != nil {
		return err
	}
	upTo, err := snd.s.deps.E2EE.ToDevicePosition(ctx)
	if err != nil {
		return err
	}
	for _, d := range devices {
		for {
			msgs, last, err := snd.s.deps.E2EE.TakeToDevice(ctx, userID, d.DeviceID, 0, upTo, 100)
			if err != nil {
				return err
			}
			if len(msgs) == 0 {
				break
			}
			err = snd.s.deps.DB.WithTx(ctx, func(tx *storage.Tx) error {
				for _, msg := range msgs {
					ev := map[string]any{"type": msg.Type, "sender": msg.Sender, "content": msg.Content,
						"to_user_id": userID, "to_device_id": d.DeviceID}
					if err := queue(ctx, tx, w.r.ID, "to_device", ev); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			// Queued: now taken from the inbox (TakeToDevice deletes up to acked).
			if _, _, err := snd.s.deps.E2EE.TakeToDevice(ctx, userID, d.DeviceID, last, last, 1); err != nil {
				return err
			}
			w.poke()
			if len(msgs) < 100 {
				break
			}
		}
	}
	return nil
}
