package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/users"
)

// The evaluator decides, for every new event of the timeline, which local users
// it notifies, off the send path.
//
// Durability: like the federation sender, it walks the events stream through the
// room engine (rooms.Service.EventsSince) from a cursor in its own table
// (push_cursor 'evaluator'), evaluates a batch outside any transaction, and then
// in one short transaction moves the cursor (only from where it read: if another
// node moved it first, the batch is dropped and read again) and stores the
// notifications with positions of the push_notifications stream. Bus notices only
// wake it, so an event committed just before a crash is still evaluated after the
// restart. Local and federated events take the same path; outliers, rejected and
// soft-failed events never enter the stream, so they are never evaluated.
//
// Who is evaluated: the local users joined to the room in the state before the
// event (plus a local invitee for an invite), never the sender, never a user who
// ignores the sender.
type evaluator struct {
	s      *Service
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	subs   []*nats.Subscription
	wg     sync.WaitGroup

	// rooms caches each room's members and power levels for the scanner (its
	// goroutine only): it follows the room's member and power level events as it
	// passes them, in stream order, and drops a room whose state the engine
	// replaced wholesale. Without it every event in a 10 000-member room would
	// read the member list.
	rooms map[string]*roomState
	// committed is the cursor this node last wrote; a cursor found elsewhere
	// means another node evaluated events whose state changes the cache missed.
	committed int64

	// upTo is the events position every event at or before which this node has
	// evaluated (or seen another node's cursor pass); advanced is closed and
	// replaced whenever it moves. Both guarded by advMu. Sync waits on them so
	// the counts it sends cover the events it sends.
	advMu    sync.Mutex
	upTo     int64
	advanced chan struct{}

	mu sync.Mutex
	// epoch counts rule changes, so a load that raced a change is not cached;
	// users caches each local user's compiled rules, sets the compiled rulesets
	// by key (shared by every user whose rules are the same). Guarded by mu.
	epoch uint64
	users map[string]*userRules
	sets  map[string]*compiled
}

type roomState struct {
	joined     map[string]string // every joined member → display name
	local      map[string]Owner  // the local ones, names lowered once
	pl         map[string]any    // power_levels content; nil if none
	creators   []string
	privileged bool
}

type userRules struct {
	set     *compiled
	ignored map[string]bool
}

// cursorName is the evaluator's row in push_cursor.
const cursorName = "evaluator"

// LateSubject is published with NoticeSubject when some of the notifications
// stored belong to events older than lateAfter: syncs that may have answered
// without their counts wake on it (clientsync's notifier).
const LateSubject = "hongyan.push.late"

// lateAfter is the age of an event past which its notification may come after
// a sync stopped waiting for it (clientsync waits 50 ms).
const lateAfter = 40 * time.Millisecond

// scanBatch is how many events one pass reads.
const scanBatch = 100

// Start starts the evaluator; Close stops it. A new database's cursor starts at
// the current end of the events stream: history from before the evaluator
// existed notifies no one.
func (s *Service) Start(ctx context.Context) error {
	if s.deps.DB == nil || s.deps.Rooms == nil {
		return errors.New("push evaluator: DB and Rooms are required")
	}
	e := &evaluator{s: s, wake: make(chan struct{}, 1), rooms: map[string]*roomState{}, advanced: make(chan struct{}),
		users: map[string]*userRules{}, sets: map[string]*compiled{}}
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	end, err := s.deps.Rooms.LatestPosition(ctx)
	if err != nil {
		e.cancel()
		return fmt.Errorf("push cursor: %w", err)
	}
	if _, err := s.deps.DB.Exec(ctx, `INSERT INTO push_cursor (name, pos) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, cursorName, end); err != nil {
		e.cancel()
		return fmt.Errorf("push cursor: %w", err)
	}
	if bus := s.deps.Bus; bus != nil {
		for subject, fn := range map[string]nats.MsgHandler{
			rooms.NoticeSubject:      func(*nats.Msg) { e.poke() },
			users.AccountDataSubject: e.onAccountData,
		} {
			sub, err := bus.Subscribe(subject, fn)
			if err != nil {
				e.close()
				return fmt.Errorf("push evaluator: subscribe %s: %w", subject, err)
			}
			e.subs = append(e.subs, sub)
		}
	}
	s.ev = e
	e.wg.Add(1)
	go e.run()
	return nil
}

// Close stops the evaluator and waits for it.
func (s *Service) Close() {
	if s.ev != nil {
		s.ev.close()
	}
}

func (e *evaluator) close() {
	for _, sub := range e.subs {
		sub.Unsubscribe()
	}
	e.cancel()
	e.wg.Wait()
}

func (e *evaluator) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// onAccountData forgets a user's cached rules when their account data changes
// (push rules, ignored users).
func (e *evaluator) onAccountData(m *nats.Msg) {
	var n users.AccountDataNotice
	if json.Unmarshal(m.Data, &n) != nil {
		return
	}
	e.mu.Lock()
	e.epoch++
	delete(e.users, n.UserID)
	e.mu.Unlock()
}

// gather is how long the evaluator lets events accumulate after a pass that
// found several events (they arrive faster than one commit each can keep up
// with): each pass then stores many events' notifications in one commit. Every
// commit takes the write lock the send path needs too (SQLite has one writer),
// and a user's index entries are written once per commit, not once per event.
// At a trickle (one event per pass) there is no wait, so counts stay prompt.
const gather = 50 * time.Millisecond

func (e *evaluator) run() {
	defer e.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		busy := false
		for {
			n, err := e.scanOnce(e.ctx)
			if err != nil {
				if e.ctx.Err() == nil {
					e.s.log.Warn("evaluate push rules", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
			busy = n > 1
			if n < scanBatch {
				break
			}
		}
		select {
		case <-e.ctx.Done():
			return
		case <-e.wake:
		case <-tick.C:
		}
		if busy {
			select {
			case <-e.ctx.Done():
				return
			case <-time.After(gather):
			}
		}
	}
}

// decided is one notification the evaluator decided, not yet stored.
type decided struct {
	n        Notification
	eventPos int64
	// shared marks the room's row for an event (push_room_notifications): the
	// outcome of every local member joined before it except the sender and the
	// members with a row of their own. sender is the event's sender then.
	shared bool
	sender string
	// dont marks a member's own row that says the event does not notify them,
	// against the room's shared row.
	dont bool
}

// scanOnce evaluates the next batch of events after the cursor and returns how
// many it looked at.
func (e *evaluator) scanOnce(ctx context.Context) (int, error) {
	db := e.s.deps.DB
	var cursor int64
	if err := db.QueryRow(ctx, `SELECT pos FROM push_cursor WHERE name = $1`, cursorName).Scan(&cursor); err != nil {
		return 0, fmt.Errorf("read push cursor: %w", err)
	}
	if cursor != e.committed {
		clear(e.rooms) // another node (or a restart) passed events the cache did not follow
	}
	// Every event at or before end is committed (positions are taken under one
	// row lock), so once the events after the cursor are evaluated, all up to
	// end are.
	end, err := e.s.deps.Rooms.LatestPosition(ctx)
	if err != nil {
		return 0, err
	}
	evs, err := e.s.deps.Rooms.EventsSince(ctx, cursor, scanBatch)
	if err != nil {
		return 0, err
	}
	if len(evs) == 0 {
		e.advance(max(cursor, end))
		return 0, nil
	}
	var out []decided
	for _, r := range evs {
		ds, err := e.evaluateEvent(ctx, r)
		if err != nil {
			clear(e.rooms)
			return 0, fmt.Errorf("event %s: %w", r.EventID, err)
		}
		out = append(out, ds...)
	}
	last := evs[len(evs)-1].Pos
	lost := false
	var lastPos int64
	err = db.WithTx(ctx, func(tx *storage.Tx) error {
		lost = false
		res, err := tx.Exec(ctx, `UPDATE push_cursor SET pos = $1 WHERE name = $2 AND pos = $3`, last, cursorName, cursor)
		if err != nil {
			return fmt.Errorf("move push cursor: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("move push cursor: %w", err)
		} else if n == 0 {
			lost = true // another node stored this batch first
			return nil
		}
		if len(out) == 0 {
			return nil
		}
		first, err := tx.NextStreamPositions(ctx, "push_notifications", int64(len(out)))
		if err != nil {
			return err
		}
		lastPos = first + int64(len(out)) - 1
		return insertNotifications(ctx, tx, first, out)
	})
	if err != nil || lost {
		clear(e.rooms)
		e.committed = -1
		return len(evs), err
	}
	e.committed = last
	if len(evs) < scanBatch {
		e.advance(max(last, end))
	} else {
		e.advance(last)
	}
	if len(out) > 0 && e.s.deps.Bus != nil {
		data, _ := json.Marshal(map[string]int64{"pos": lastPos})
		if err := e.s.deps.Bus.Publish(NoticeSubject, data); err != nil {
			// Stored already; consumers also poll.
			e.s.log.Warn("publish push notice", "err", err)
		}
		// A sync waits for the evaluator (WaitEvaluated) before it answers, so
		// the counts of prompt notifications travel with their events. Only
		// notifications of older events (a slow pass, federation) may have come
		// after a sync gave up waiting: only they wake the syncs again, so one
		// message does not wake every member's sync twice.
		now := time.Now().UnixMilli()
		for _, d := range out {
			if now-d.n.TS > lateAfter.Milliseconds() {
				if err := e.s.deps.Bus.Publish(LateSubject, data); err != nil {
					e.s.log.Warn("publish push notice", "err", err)
				}
				break
			}
		}
	}
	return len(evs), nil
}

// advance records that every event up to pos is evaluated and wakes waiters.
func (e *evaluator) advance(pos int64) {
	e.advMu.Lock()
	defer e.advMu.Unlock()
	if pos > e.upTo {
		e.upTo = pos
		close(e.advanced)
		e.advanced = make(chan struct{})
	}
}

// WaitEvaluated waits, at most limit, until every event at or before the events
// position pos has been evaluated, so that counts read next include their
// notifications. It reports whether they have. Sync calls it before reading the
// notifications position for a response that carries events up to pos.
func (s *Service) WaitEvaluated(ctx context.Context, pos int64, limit time.Duration) bool {
	e := s.ev
	if e == nil {
		return false
	}
	deadline := time.Now().Add(limit)
	for {
		e.advMu.Lock()
		upTo, ch := e.upTo, e.advanced
		e.advMu.Unlock()
		if upTo >= pos {
			return true
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return false
		}
		// Another node may run the evaluator: its cursor in the database counts too.
		var cursor int64
		if err := s.deps.DB.QueryRow(ctx, `SELECT pos FROM push_cursor WHERE name = $1`, cursorName).Scan(&cursor); err == nil && cursor >= pos {
			return true
		}
		t := time.NewTimer(min(remaining, 50*time.Millisecond))
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		t.Stop()
	}
}

// insertNotifications stores ds with positions from first on. The users of one
// event with the same outcome (nearly all of a large room) go in one statement
// that expands a JSON array of their IDs: one parameter, not nine per row, which
// on SQLite is most of the cost of a wide multi-row insert.
func insertNotifications(ctx context.Context, tx *storage.Tx, first int64, ds []decided) error {
	// OR FAIL: a multi-row statement that may abort needs a statement journal,
	// a temporary file SQLite writes every touched page to; FAIL needs none (the
	// transaction is rolled back on any error anyway).
	q := `INSERT OR FAIL INTO push_notifications (pos, user_id, room_id, event_id, thread_id, event_pos, actions, highlight, ts, notify)
		SELECT $1 + j.key, j.value, $2, $3, $4, $5, $6, $7, $8, $10 FROM json_each($9) j`
	if tx.Dialect() == storage.Postgres {
		q = `INSERT INTO push_notifications (pos, user_id, room_id, event_id, thread_id, event_pos, actions, highlight, ts, notify)
		SELECT $1 + j.ord - 1, j.value, $2, $3, $4, $5, $6, $7, $8, $10 FROM jsonb_array_elements_text($9::jsonb) WITH ORDINALITY AS j(value, ord)`
	}
	pos := first
	for start := 0; start < len(ds); {
		d := ds[start]
		actions := "[]"
		if d.n.Actions != nil {
			actions = actionsKey(d.n.Actions)
		}
		if d.shared {
			if _, err := tx.Exec(ctx, `INSERT INTO push_room_notifications (pos, room_id, event_id, thread_id, event_pos, sender, actions, ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, pos, d.n.RoomID, d.n.EventID, d.n.ThreadID, d.eventPos, d.sender, actions, d.n.TS); err != nil {
				return fmt.Errorf("store notification of %s: %w", d.n.EventID, err)
			}
			pos++
			start++
			continue
		}
		users := []string{d.n.UserID}
		end := start + 1
		for ; end < len(ds); end++ {
			e := ds[end]
			if e.shared || e.dont != d.dont || e.n.EventID != d.n.EventID || e.n.Highlight != d.n.Highlight || !sameActions(e.n.Actions, d.n.Actions) {
				break
			}
			users = append(users, e.n.UserID)
		}
		list, _ := json.Marshal(users)
		if _, err := tx.Exec(ctx, q, pos, d.n.RoomID, d.n.EventID, d.n.ThreadID, d.eventPos, actions, d.n.Highlight, d.n.TS, string(list), !d.dont); err != nil {
			return fmt.Errorf("store notifications of %s: %w", d.n.EventID, err)
		}
		pos += int64(len(users))
		start = end
	}
	return nil
}

// sameActions reports whether two action lists are the same. Rules compiled
// once share their slices, so the first check nearly always decides.
func sameActions(a, b []json.RawMessage) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if string(a[i]) != string(b[i]) {
			return false
		}
	}
	return true
}

func (e *evaluator) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+e.s.deps.ServerName)
}

// evaluateEvent decides whom one event notifies and moves the room's cached
// state past it.
func (e *evaluator) evaluateEvent(ctx context.Context, r rooms.OutboundEvent) ([]decided, error) {
	if r.StateReplaced {
		delete(e.rooms, r.RoomID)
	}
	st := e.rooms[r.RoomID]
	if st == nil {
		ps, err := e.s.deps.Rooms.PushStateBefore(ctx, r.EventID)
		if err != nil {
			return nil, err
		}
		st = e.newRoomState(ps)
		if len(e.rooms) >= 1000 {
			clear(e.rooms)
		}
		e.rooms[r.RoomID] = st
	}
	// The local users to evaluate for.
	var who []string
	for u := range st.local {
		if u != r.Sender {
			who = append(who, u)
		}
	}
	if r.Type == spec.MRoomMember && r.HasStateKey && r.Membership == spec.Invite && r.StateKey != r.Sender && e.isLocal(r.StateKey) {
		if _, joined := st.local[r.StateKey]; !joined {
			who = append(who, r.StateKey)
		}
	}
	isPL := r.Type == spec.MRoomPowerLevels && r.HasStateKey && r.StateKey == ""
	if len(who) == 0 && r.Type != spec.MRoomMember && !isPL {
		return nil, nil
	}
	pe, err := e.s.deps.Rooms.PushEventOf(ctx, r.EventID)
	if err != nil {
		return nil, err
	}
	ev, err := ParseEvent(pe.JSON)
	if err != nil {
		return nil, err
	}
	var out []decided
	if len(who) > 0 {
		rules, err := e.rulesOf(ctx, who)
		if err != nil {
			return nil, err
		}
		room := Room{MemberCount: len(st.joined), SenderPower: senderPower(st.pl, r.Sender, st.creators, st.privileged),
			NotificationLevels: notificationLevels(st.pl)}
		targets := make([]target, 0, len(who))
		for _, u := range who {
			ur := rules[u]
			if ur == nil || ur.ignored[r.Sender] {
				continue
			}
			o, ok := st.local[u]
			if !ok { // an invitee
				o = newOwner(u, "")
			}
			targets = append(targets, target{owner: o, set: ur.set})
		}
		evaluateMany(ev, &room, targets, func(t *target, o Outcome) {
			out = append(out, decided{eventPos: r.Pos, n: Notification{UserID: t.owner.UserID, RoomID: r.RoomID, EventID: r.EventID,
				ThreadID: ev.ThreadID, TS: pe.OriginTS, Actions: o.Actions, Highlight: o.Highlight}})
		})
		out = e.share(st, r, out)
	}
	// The state after the event, for the room's next event.
	switch {
	case r.Type == spec.MRoomMember && r.HasStateKey:
		if r.Membership == spec.Join {
			name, _ := ev.lookup([]string{"content", "displayname"})
			s, _ := name.(string)
			st.joined[r.StateKey] = s
			if e.isLocal(r.StateKey) {
				st.local[r.StateKey] = newOwner(r.StateKey, s)
			}
		} else {
			delete(st.joined, r.StateKey)
			delete(st.local, r.StateKey)
		}
	case isPL:
		st.pl, _ = ev.m["content"].(map[string]any)
	}
	return out, nil
}

// share turns the per-member notifications of one event into the room's shared
// row plus rows of their own for the members whose outcome differs (a mention, a
// highlight, other actions, no notification at all), when that writes fewer
// rows: in a busy room nearly every member is on the defaults and shares the
// outcome, so a message writes one row instead of one per member. The shared
// outcome is the most common one without a highlight among the members joined
// before the event; an invitee is never part of it.
func (e *evaluator) share(st *roomState, r rooms.OutboundEvent, out []decided) []decided {
	members := len(st.local)
	if _, ok := st.local[r.Sender]; ok {
		members--
	}
	// Compiled rules share their action slices, so a key is marshalled once per
	// rule, not once per member.
	keys := map[*json.RawMessage]string{}
	keyOf := func(a []json.RawMessage) string {
		if len(a) == 0 {
			return "[]"
		}
		k, ok := keys[&a[0]]
		if !ok {
			k = actionsKey(a)
			keys[&a[0]] = k
		}
		return k
	}
	counts := map[string]int{}
	best, bestN := "", 0
	for _, d := range out {
		if _, member := st.local[d.n.UserID]; !member || d.n.Highlight {
			continue
		}
		k := keyOf(d.n.Actions)
		counts[k]++
		if counts[k] > bestN {
			best, bestN = k, counts[k]
		}
	}
	// Rows written with the shared row: itself and one per member not sharing it
	// (plus the invitee's, as without).
	if bestN == 0 || 1+members-bestN >= len(out) {
		return out
	}
	notified := make(map[string]bool, len(out))
	shared := []decided{}
	for _, d := range out {
		notified[d.n.UserID] = true
		_, member := st.local[d.n.UserID]
		if member && !d.n.Highlight && keyOf(d.n.Actions) == best {
			if len(shared) == 0 {
				s := d
				s.shared, s.sender, s.n.UserID = true, r.Sender, ""
				shared = append(shared, s)
			}
			continue
		}
	}
	res := shared
	for _, d := range out {
		_, member := st.local[d.n.UserID]
		if member && !d.n.Highlight && keyOf(d.n.Actions) == best {
			continue
		}
		res = append(res, d)
	}
	for u := range st.local {
		if u != r.Sender && !notified[u] {
			res = append(res, decided{eventPos: r.Pos, dont: true, n: Notification{UserID: u, RoomID: r.RoomID, EventID: r.EventID,
				ThreadID: shared[0].n.ThreadID, TS: shared[0].n.TS}})
		}
	}
	return res
}

func actionsKey(a []json.RawMessage) string {
	b, _ := json.Marshal(a)
	return string(b)
}

func (e *evaluator) newRoomState(ps rooms.PushState) *roomState {
	st := &roomState{joined: ps.Joined, local: map[string]Owner{}, creators: ps.Creators, privileged: ps.PrivilegedCreators}
	for u, name := range ps.Joined {
		if e.isLocal(u) {
			st.local[u] = newOwner(u, name)
		}
	}
	if len(ps.PowerLevels) > 0 {
		if ev, err := ParseEvent([]byte(`{"content":` + string(ps.PowerLevels) + `}`)); err == nil {
			st.pl, _ = ev.m["content"].(map[string]any)
		}
	}
	return st
}

// newOwner is a member as conditions see them, names lowered.
func newOwner(userID, displayName string) Owner {
	o := Owner{UserID: userID, Localpart: localpartOf(userID), DisplayName: displayName}
	o.prepare()
	return o
}

func localpartOf(userID string) string {
	return strings.TrimPrefix(strings.SplitN(userID, ":", 2)[0], "@")
}

// rulesOf returns the compiled rules of the users, loading the ones not cached in
// one batch.
func (e *evaluator) rulesOf(ctx context.Context, userIDs []string) (map[string]*userRules, error) {
	out := make(map[string]*userRules, len(userIDs))
	var missing []string
	e.mu.Lock()
	epoch := e.epoch
	for _, u := range userIDs {
		if ur, ok := e.users[u]; ok {
			out[u] = ur
		} else {
			missing = append(missing, u)
		}
	}
	e.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	locals := make([]string, len(missing))
	for i, u := range missing {
		locals[i] = localpartOf(u)
	}
	data, err := e.s.users.GlobalAccountDataOf(ctx, locals, []string{"m.push_rules", "m.ignored_user_list"})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, u := range missing {
		ad := data[locals[i]]
		rs := Defaults(u)
		if raw, ok := ad["m.push_rules"]; ok {
			if stored, err := rulesetFrom(raw, u); err == nil {
				rs = stored
			} else {
				e.s.log.Warn("stored push rules do not parse; using the defaults", "user", u, "err", err)
			}
		}
		c, key := compileFor(rs, u)
		if shared, ok := e.sets[key]; ok {
			c = shared
		} else {
			if len(e.sets) >= 10_000 {
				clear(e.sets)
			}
			e.sets[key] = c
		}
		ur := &userRules{set: c}
		if raw, ok := ad["m.ignored_user_list"]; ok {
			var ign struct {
				IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
			}
			if json.Unmarshal(raw, &ign) == nil && len(ign.IgnoredUsers) > 0 {
				ur.ignored = map[string]bool{}
				for id := range ign.IgnoredUsers {
					ur.ignored[id] = true
				}
			}
		}
		out[u] = ur
		if e.epoch == epoch {
			if len(e.users) >= 200_000 {
				clear(e.users)
			}
			e.users[u] = ur
		}
	}
	return out, nil
}

// rulesetFrom reads stored m.push_rules account data.
func rulesetFrom(raw json.RawMessage, userID string) (Ruleset, error) {
	var content struct {
		Global Ruleset `json:"global"`
	}
	if err := json.Unmarshal(raw, &content); err != nil {
		return Ruleset{}, fmt.Errorf("stored push rules of %s: %w", userID, err)
	}
	return content.Global, nil
}

// Position is the latest committed position of the notifications stream.
func (s *Service) Position(ctx context.Context) (int64, error) {
	var pos int64
	err := s.deps.DB.StreamPos(ctx, "push_notifications", &pos)
	return pos, err
}

// NotificationsSince returns up to limit notifications after position after, in
// stream order. Positions are taken in commit order, so a consumer that moves
// its cursor to the last position returned never skips one. Unread is left zero:
// it costs a count per user, so a consumer fills it (FillUnread) only for the
// users it delivers to.
func (s *Service) NotificationsSince(ctx context.Context, after int64, limit int) ([]Notification, error) {
	rows, err := s.deps.DB.Query(ctx, `SELECT pos, user_id, room_id, event_id, thread_id, actions, highlight, ts, '' AS sender FROM push_notifications
		WHERE pos > $1 AND notify
		UNION ALL SELECT pos, '', room_id, event_id, thread_id, actions, FALSE, ts, sender FROM push_room_notifications WHERE pos > $1
		ORDER BY pos LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("notifications after %d: %w", after, err)
	}
	var read []Notification
	var senders []string
	for rows.Next() {
		var n Notification
		var actions, sender string
		if err := rows.Scan(&n.Pos, &n.UserID, &n.RoomID, &n.EventID, &n.ThreadID, &actions, &n.Highlight, &n.TS, &sender); err != nil {
			rows.Close()
			return nil, fmt.Errorf("notifications after %d: %w", after, err)
		}
		if err := json.Unmarshal([]byte(actions), &n.Actions); err != nil {
			rows.Close()
			return nil, fmt.Errorf("notification %d: actions: %w", n.Pos, err)
		}
		read = append(read, n)
		senders = append(senders, sender)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("notifications after %d: %w", after, err)
	}
	// A room's shared row is every local member joined before the event except
	// the sender and the members with a row of their own: expanded here, so a
	// consumer sees one Notification per user as before (all at the row's Pos).
	var out []Notification
	for i, n := range read {
		if n.UserID != "" {
			out = append(out, n)
			continue
		}
		users, err := s.sharedUsers(ctx, n, senders[i])
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			m := n
			m.UserID = u
			out = append(out, m)
		}
	}
	return out, nil
}

// sharedUsers returns the users a room's shared row notifies.
func (s *Service) sharedUsers(ctx context.Context, n Notification, sender string) ([]string, error) {
	ps, err := s.deps.Rooms.PushStateBefore(ctx, n.EventID)
	if err != nil {
		return nil, err
	}
	own := map[string]bool{}
	rows, err := s.deps.DB.Query(ctx, `SELECT user_id FROM push_notifications WHERE event_pos = (SELECT event_pos FROM push_room_notifications WHERE pos = $1)`, n.Pos)
	if err != nil {
		return nil, fmt.Errorf("notifications of %s: %w", n.EventID, err)
	}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return nil, fmt.Errorf("notifications of %s: %w", n.EventID, err)
		}
		own[u] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("notifications of %s: %w", n.EventID, err)
	}
	var out []string
	for u := range ps.Joined {
		if u != sender && !own[u] && strings.HasSuffix(u, ":"+s.deps.ServerName) {
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out, nil
}
