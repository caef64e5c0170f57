package pusher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Delivery, in three steps:
//
//  1. The scanner reads push's notifications stream after its cursor (the
//     pusher_cursor row 'pusher'), and in one transaction queues each
//     notification for every HTTP pusher of its user (pusher_queue) and moves the
//     cursor, compare-and-set, so two nodes scanning at once cannot queue a
//     notification twice. Bus notices only wake it (push.NoticeSubject, with a
//     one-second tick as a safety net): a notification decided just before a
//     crash is queued after the restart.
//  2. One worker per pusher with work sends its queue in order, one POST per
//     notification, and deletes each row once the gateway answered 2xx. It holds
//     the pusher's lease (pushers.lease_node, renewed before every POST), so on
//     several nodes one sends and the others' workers step back; every
//     sweepEvery the scanner kicks every pusher with work, which also picks up a
//     queue whose node went away. While the
//     gateway fails (no answer, 5xx, 408, 429) the worker waits, MinBackoff
//     doubling to MaxBackoff, and tries again; other pushers are not held up. A
//     pusher that has failed for GiveUpAfter in a row drops the notification at
//     its head after each further failed attempt, so a dead gateway costs one
//     attempt per notification and the queue cannot grow without bound. Another
//     4xx is the gateway refusing that notification: it is dropped at once.
//  3. A gateway that lists the pusher's pushkey in "rejected" has forgotten the
//     app: the pusher is deleted, with its queue.
//
// The event of each notification is read through the room engine's visibility
// filter for the pushed user: what they could not read is never pushed.

// scanBatch is how many notifications one scanner transaction queues.
const scanBatch = 100

// workerBatch is how many queued rows a worker reads at a time.
const workerBatch = 20

// errCursorMoved means another node moved the cursor first: this batch is
// theirs.
var errCursorMoved = errors.New("pusher cursor moved by another scanner")

// sweepEvery is how often the scanner kicks every pusher with work.
const sweepEvery = 30 * time.Second

// leaseFor is how long a pusher lease lasts without renewal.
const leaseFor = 2 * time.Minute

// scan queues new notifications until the service closes.
func (s *Service) scan() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastSweep := time.Now()
	for {
		if time.Since(lastSweep) >= sweepEvery {
			lastSweep = time.Now()
			if ids, err := s.pushersWithWork(s.ctx); err == nil {
				for _, id := range ids {
					s.kick(id)
				}
			}
		}
		for {
			n, err := s.scanOnce(s.ctx)
			if err != nil {
				if s.ctx.Err() == nil && !errors.Is(err, errCursorMoved) {
					s.log.Warn("queue notifications for pushers", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		case <-tick.C:
		}
	}
}

// scanOnce queues the next batch of notifications after the cursor and returns
// how many it took.
func (s *Service) scanOnce(ctx context.Context) (int, error) {
	var cursor int64
	if err := s.db.QueryRow(ctx, `SELECT pos FROM pusher_cursor WHERE name = 'pusher'`).Scan(&cursor); err != nil {
		return 0, fmt.Errorf("read pusher cursor: %w", err)
	}
	ns, err := s.d.Source.NotificationsSince(ctx, cursor, scanBatch)
	if err != nil || len(ns) == 0 {
		return 0, err
	}
	var kicked []int64
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		kicked = kicked[:0]
		byUser := map[string][]int64{}
		now := time.Now().UnixMilli()
		for _, n := range ns {
			ids, seen := byUser[n.UserID]
			if !seen {
				var err error
				if ids, err = pusherIDs(ctx, tx, n.UserID); err != nil {
					return err
				}
				byUser[n.UserID] = ids
			}
			if len(ids) == 0 {
				continue
			}
			raw, _ := json.Marshal(n)
			for _, id := range ids {
				if _, err := tx.Exec(ctx, `INSERT INTO pusher_queue (pusher_id, kind, notification, created_ts) VALUES ($1, 'event', $2, $3)`,
					id, string(raw), now); err != nil {
					return fmt.Errorf("queue notification %d for pusher %d: %w", n.Pos, id, err)
				}
				kicked = append(kicked, id)
			}
		}
		res, err := tx.Exec(ctx, `UPDATE pusher_cursor SET pos = $1 WHERE name = 'pusher' AND pos = $2`, ns[len(ns)-1].Pos, cursor)
		if err != nil {
			return fmt.Errorf("move pusher cursor: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errCursorMoved
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	slices.Sort(kicked)
	for _, id := range slices.Compact(kicked) {
		s.kick(id)
	}
	if s.d.Bus != nil {
		data, _ := json.Marshal(Notified{Notifications: ns})
		if err := s.d.Bus.Publish(NotifiedSubject, data); err != nil {
			// Queued already; only the live native pushes of this batch are lost.
			s.log.Warn("publish notified", "err", err)
		}
	}
	return len(ns), nil
}

func pusherIDs(ctx context.Context, tx *storage.Tx, userID string) ([]int64, error) {
	rows, err := tx.Query(ctx, `SELECT id FROM pushers WHERE user_id = $1 AND kind = 'http' ORDER BY id`, userID)
	if err != nil {
		return nil, fmt.Errorf("pushers of %s: %w", userID, err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// queueBadge queues a counts-only push for each of the user's pushers. The badge
// is computed when the row is sent, and a worker skips one equal to the badge it
// sent last, so repeated receipts (or every node queuing for the same receipt)
// cost a count each, not a push. Rows are not merged: one already being sent
// carries the count from before this receipt.
func (s *Service) queueBadge(ctx context.Context, userID string) error {
	var ids []int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if ids, err = pusherIDs(ctx, tx, userID); err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		for _, id := range ids {
			if _, err := tx.Exec(ctx, `INSERT INTO pusher_queue (pusher_id, kind, notification, created_ts) VALUES ($1, 'badge', '{}', $2)`,
				id, now); err != nil {
				return fmt.Errorf("queue badge for pusher %d: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.kick(id)
	}
	return nil
}

// pushersWithWork lists the pushers whose queues are not empty.
func (s *Service) pushersWithWork(ctx context.Context) ([]int64, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT pusher_id FROM pusher_queue`)
	if err != nil {
		return nil, fmt.Errorf("pushers with work: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// worker sends one pusher's queue.
type worker struct {
	id   int64
	wake chan struct{} // a kick while the worker runs; capacity 1
	// lastBadge is the badge last sent (-1: none yet): a badge update that would
	// not change it is not sent. Worker goroutine only.
	lastBadge int
}

// kick makes sure pusher id's worker runs and looks at its queue again.
func (s *Service) kick(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if w := s.workers[id]; w != nil {
		select {
		case w.wake <- struct{}{}:
		default:
		}
		return
	}
	w := &worker{id: id, wake: make(chan struct{}, 1), lastBadge: -1}
	s.workers[id] = w
	s.wg.Add(1)
	go s.run(w)
}

// retire ends w if no kick arrived since its queue was read empty: kicks are sent
// under mu after their rows committed, so none is lost between the two. The
// lease goes with it, so another node may send what it queues next.
func (s *Service) retire(w *worker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.wake:
		return false
	default:
	}
	delete(s.workers, w.id)
	s.release(w.id)
	return true
}

// lease takes or renews this node's lease on pusher id; false means another
// node's worker holds it (or the pusher is gone).
func (s *Service) lease(ctx context.Context, id int64) (bool, error) {
	now := time.Now()
	res, err := s.db.Exec(ctx, `UPDATE pushers SET lease_node = $1, lease_until = $2
		WHERE id = $3 AND (lease_node = $1 OR lease_until < $4)`, s.node, now.Add(leaseFor).UnixMilli(), id, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("lease pusher %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// release gives up this node's lease on pusher id.
func (s *Service) release(id int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 5*time.Second)
	defer cancel()
	if _, err := s.db.Exec(ctx, `UPDATE pushers SET lease_until = 0 WHERE id = $1 AND lease_node = $2`, id, s.node); err != nil {
		s.log.Warn("release pusher lease", "pusher", id, "err", err)
	}
}

type queued struct {
	id   int64
	kind string
	json string
}

// outcome is what became of one delivery attempt.
type outcome int

const (
	sent     outcome = iota // the gateway took it
	dropped                 // not to be sent, or refused for good: forget it
	rejected                // the gateway rejected the pushkey: delete the pusher
	failed                  // try again later
)

func (s *Service) run(w *worker) {
	defer s.wg.Done()
	ctx := s.ctx
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		rows, err := s.head(ctx, w.id)
		if err != nil {
			s.log.Warn("read pusher queue", "pusher", w.id, "err", err)
			if !sleep(ctx, s.cfg.MinBackoff) {
				break
			}
			continue
		}
		if len(rows) == 0 {
			if s.retire(w) {
				return
			}
			continue
		}
		p, ok, err := s.byID(ctx, w.id)
		if err != nil || !ok {
			if err == nil { // deleted while work was queued: nothing to send it to
				_, err = s.db.Exec(ctx, `DELETE FROM pusher_queue WHERE pusher_id = $1`, w.id)
			}
			if err != nil {
				s.log.Warn("read pusher", "pusher", w.id, "err", err)
				sleep(ctx, s.cfg.MinBackoff)
			}
			continue
		}
		for _, row := range rows {
			if mine, err := s.lease(ctx, p.id); err != nil || !mine {
				if err != nil {
					s.log.Warn("lease pusher", "pusher", p.id, "err", err)
					sleep(ctx, s.cfg.MinBackoff)
					break
				}
				s.mu.Lock() // another node sends this queue; its kicks find no worker here
				delete(s.workers, w.id)
				s.mu.Unlock()
				return
			}
			res, err := s.deliver(ctx, w, p, row)
			if ctx.Err() != nil {
				return
			}
			if res == failed {
				now := time.Now().UnixMilli()
				if p.failing == 0 {
					p.failing = now
					s.setFailing(ctx, p.id, now)
				}
				if time.Duration(now-p.failing)*time.Millisecond < s.cfg.GiveUpAfter {
					backoff = min(max(2*backoff, s.cfg.MinBackoff), s.cfg.MaxBackoff)
					s.log.Info("push gateway failed; retrying", "pusher", p.id, "user", p.userID, "after", backoff, "err", err)
					sleep(ctx, backoff)
					break // read the queue and the pusher again
				}
				s.log.Warn("push gateway failing for too long; dropping a notification", "pusher", p.id, "user", p.userID,
					"since", time.UnixMilli(p.failing), "err", err)
				res = dropped
			}
			if res == rejected {
				s.log.Info("push gateway rejected the pushkey; pusher deleted", "pusher", p.id, "user", p.userID, "app_id", p.AppID)
				if err := s.delete(ctx, `WHERE id = $1`, p.id); err != nil {
					s.log.Warn("delete rejected pusher", "pusher", p.id, "err", err)
				}
				break // the queue is gone with it: the next read retires the worker
			}
			if res == sent && p.failing != 0 {
				p.failing = 0
				s.setFailing(ctx, p.id, 0)
			}
			if res == sent {
				backoff = 0
			}
			if res == dropped && err != nil && p.failing == 0 {
				s.log.Info("notification not pushed", "pusher", p.id, "user", p.userID, "err", err)
			}
			if _, err := s.db.Exec(ctx, `DELETE FROM pusher_queue WHERE id = $1`, row.id); err != nil {
				s.log.Warn("delete from pusher queue", "pusher", p.id, "err", err)
				sleep(ctx, s.cfg.MinBackoff)
				break
			}
		}
	}
	s.mu.Lock()
	delete(s.workers, w.id)
	s.mu.Unlock()
	s.release(w.id)
}

func (s *Service) head(ctx context.Context, pusherID int64) ([]queued, error) {
	rows, err := s.db.Query(ctx, `SELECT id, kind, notification FROM pusher_queue WHERE pusher_id = $1 ORDER BY id LIMIT $2`, pusherID, workerBatch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []queued
	for rows.Next() {
		var q queued
		if err := rows.Scan(&q.id, &q.kind, &q.json); err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

func (s *Service) setFailing(ctx context.Context, id, since int64) {
	if _, err := s.db.Exec(ctx, `UPDATE pushers SET failing_since = $1 WHERE id = $2`, since, id); err != nil {
		s.log.Warn("record pusher failing", "pusher", id, "err", err)
	}
}

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// deliver makes one attempt at one queued row.
func (s *Service) deliver(ctx context.Context, w *worker, p Pusher, row queued) (outcome, error) {
	var body map[string]any
	badge := -1
	switch row.kind {
	case "badge":
		b, err := s.badge(ctx, p.userID)
		if err != nil {
			return failed, err
		}
		if b == w.lastBadge {
			return dropped, nil
		}
		badge = b
		body = badgeBody(p, b)
	case "event":
		var n push.Notification
		if err := json.Unmarshal([]byte(row.json), &n); err != nil {
			return dropped, fmt.Errorf("queued notification: %w", err)
		}
		if n.UserID != p.userID {
			return dropped, fmt.Errorf("notification for %s queued for a pusher of %s", n.UserID, p.userID)
		}
		b, err := s.badge(ctx, p.userID)
		if err != nil {
			return failed, err
		}
		badge = b
		if body, err = s.eventBody(ctx, p, n, b); err != nil {
			if e, ok := mxerror.As(err); ok && (e.Code == mxerror.NotFound || e.Code == mxerror.Forbidden) {
				return dropped, err // not visible to the user: never pushed
			}
			return failed, err
		}
	default:
		return dropped, fmt.Errorf("unknown queue row kind %q", row.kind)
	}
	res, err := s.post(ctx, p, body)
	if res == sent {
		w.lastBadge = badge
	}
	return res, err
}

// badge is the count the app shows on its icon, as Synapse counts it by default:
// the rooms the user is invited to plus the joined rooms with unread
// notifications (not the notifications themselves: ten messages in one room are
// one conversation to answer).
func (s *Service) badge(ctx context.Context, userID string) (int, error) {
	ms, err := s.d.Rooms.UserMemberships(ctx, userID)
	if err != nil {
		return 0, err
	}
	badge := 0
	var joined []string
	for _, m := range ms {
		switch m.Membership {
		case "invite":
			badge++
		case "join":
			joined = append(joined, m.RoomID)
		}
	}
	if len(joined) == 0 {
		return badge, nil
	}
	counts, err := s.d.Source.UnreadCounts(ctx, userID, joined, false)
	if err != nil {
		return 0, fmt.Errorf("badge of %s: %w", userID, err)
	}
	for _, c := range counts {
		if c.Notifications > 0 {
			badge++
		}
	}
	return badge, nil
}

// maxReplyBytes bounds a gateway's answer.
const maxReplyBytes = 64 << 10

// post sends one body to p's gateway.
func (s *Service) post(ctx context.Context, p Pusher, body map[string]any) (outcome, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return dropped, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(raw))
	if err != nil {
		return dropped, fmt.Errorf("gateway URL: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, outbound.ErrRefused) {
			// The address is not one gateways may be reached at: retrying will
			// not change that (push.gateway_allow_cidrs would).
			return dropped, fmt.Errorf("push gateway %s: %w", req.URL.Redacted(), err)
		}
		return failed, fmt.Errorf("push gateway %s: %w", req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(outbound.LimitBody(resp.Body, maxReplyBytes))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return failed, fmt.Errorf("push gateway %s: status %d", req.URL.Redacted(), resp.StatusCode)
	case resp.StatusCode >= 300:
		return dropped, fmt.Errorf("push gateway %s refused the notification: status %d", req.URL.Redacted(), resp.StatusCode)
	case err != nil:
		return failed, fmt.Errorf("push gateway %s: read answer: %w", req.URL.Redacted(), err)
	}
	var ans struct {
		Rejected []string `json:"rejected"`
	}
	json.Unmarshal(reply, &ans) // an answer without a list rejects nothing
	if slices.Contains(ans.Rejected, p.PushKey) {
		return rejected, nil
	}
	return sent, nil
}
