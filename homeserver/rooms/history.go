package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Reader is who reads a room's events: a user (through any front-end) or another
// server (over federation, on behalf of its users). Exactly one field is set; build
// one with User or Server. Every read of events, whatever the front-end, is
// filtered for its Reader by the same rules (see visibleTo).
type Reader struct {
	UserID     string
	ServerName string
}

// User is the Reader for a user.
func User(userID string) Reader { return Reader{UserID: userID} }

// Server is the Reader for another server.
func Server(name string) Reader { return Reader{ServerName: name} }

func (r Reader) String() string {
	if r.UserID != "" {
		return r.UserID
	}
	return "server " + r.ServerName
}

// cacheKey names the reader in the visibility cache: user IDs start with '@' and
// server names never do, so the two never collide.
func (r Reader) cacheKey() string {
	if r.UserID != "" {
		return r.UserID
	}
	return r.ServerName
}

// serverOf is the server part of a user ID ("" if it has none).
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// ownsMembership reports whether the event sets the membership of the reader (a
// user) or of one of the reader's users (a server): those a reader always sees, so
// that it learns of its own join, invite, leave or kick.
func (r Reader) ownsMembership(typ string, stateKey *string) bool {
	if typ != spec.MRoomMember || stateKey == nil {
		return false
	}
	if r.UserID != "" {
		return *stateKey == r.UserID
	}
	return serverOf(*stateKey) == r.ServerName
}

// visibleTo is the history visibility rule, apart from the database. hv is the
// room's m.room.history_visibility in the state before the event and membership
// the reader's membership there (for a server: "join" if any of its users was
// joined, else "invite" if any was invited); currentlyJoined says whether a user
// reader is joined to the room now.
//
// For a user, as the spec's "History visibility" and Synapse's
// filter_events_for_client: world_readable shows everything; a member joined at the
// event sees it; shared shows everything to current members (not to those who
// left, whose window closed at their leave); invited shows the event to a user
// invited at it. For a server, as Synapse's filter_events_for_server: world_readable
// and shared show everything; invited shows the event if one of its users was
// invited or joined at it; joined only if one was joined. An unknown value is
// treated as the strictest, joined.
func visibleTo(r Reader, hv, membership string, currentlyJoined bool) bool {
	switch {
	case hv == "world_readable", membership == "join":
		return true
	case hv == "shared":
		return r.ServerName != "" || currentlyJoined
	case hv == "invited":
		return membership == "invite"
	}
	return false
}

// visibility decides which events of one room a reader may see, by the room's
// m.room.history_visibility and the reader's membership at each event. It is the one
// filter every read of events goes through. One instance serves one request and
// caches per state snapshot.
type visibility struct {
	s           *Service
	reader      Reader
	roomID      string
	currentlyIn bool
	bySnapshot  map[int64][2]string // snapshot → (history visibility, membership)
	ignored     map[string]bool     // senders a user reader ignores
	// current holds the room's current state event IDs, loaded on first need
	// by isCurrentState.
	current map[string]bool
	erased  map[string]bool // the erased senders among those checked
	checked map[string]bool // local senders looked up by loadErased
}

// isCurrentState reports whether the event is part of the room's current state,
// which a joined member may read whatever the history visibility (GET /state), and
// anyone while the room is world-readable.
func (v *visibility) isCurrentState(ctx context.Context, r eventRow) (bool, error) {
	if r.stateKey == nil || v.reader.UserID == "" {
		return false, nil
	}
	if v.current == nil && !v.currentlyIn {
		vis, err := v.s.currentHistoryVisibility(ctx, v.roomID)
		if err != nil {
			return false, err
		}
		if vis != "world_readable" {
			v.current = map[string]bool{} // none of it to show this reader
		}
	}
	if v.current == nil {
		rows, err := v.s.db.Query(ctx, `SELECT event_id FROM current_state WHERE room_id = $1`, v.roomID)
		if err != nil {
			return false, fmt.Errorf("current state of %s: %w", v.roomID, err)
		}
		defer rows.Close()
		v.current = map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return false, err
			}
			v.current[id] = true
		}
		if err := rows.Err(); err != nil {
			return false, err
		}
	}
	return v.current[r.eventID], nil
}

// errNoReader is a programming error: a Reader with neither a user nor a server.
var errNoReader = errors.New("rooms: read without a reader")

func (s *Service) newVisibility(ctx context.Context, roomID string, r Reader) (*visibility, error) {
	v := &visibility{s: s, reader: r, roomID: roomID, bySnapshot: map[int64][2]string{}, erased: map[string]bool{}}
	switch {
	case r.UserID != "":
		m, err := s.CurrentMembership(ctx, roomID, r.UserID)
		if err != nil {
			return nil, err
		}
		v.currentlyIn = m == "join"
		if s.cfg.Ignored != nil {
			if v.ignored, err = s.cfg.Ignored(ctx, r.UserID); err != nil {
				return nil, err
			}
		}
	case r.ServerName == "":
		return nil, errNoReader
	}
	return v, nil
}

func (v *visibility) canSee(ctx context.Context, r eventRow) (bool, error) {
	if v.reader.ownsMembership(r.typ, r.stateKey) {
		return true, nil
	}
	if r.stateKey == nil && v.ignored[r.sender] {
		return false, nil
	}
	at, err := v.at(ctx, r)
	if err != nil {
		return false, err
	}
	return v.visibleAt(r, at), nil
}

// prune reports whether the reader is shown the event pruned (as if redacted): its
// sender's account was erased and the reader (for a server: none of its users) was
// not joined when it was sent; another server always gets it pruned. Who was there
// keeps what they saw; who came later does not read an erased user's words (the
// spec's erasure, as Synapse does it).
func (v *visibility) prune(ctx context.Context, r eventRow) (bool, error) {
	if !v.erased[r.sender] || v.reader.ownsMembership(r.typ, r.stateKey) {
		return false, nil
	}
	if v.reader.ServerName != "" {
		// Another server would show the event to its later joiners too, so it
		// gets it pruned whatever its users saw (Synapse's filter_events_for_server).
		return true, nil
	}
	at, err := v.at(ctx, r)
	if err != nil {
		return false, err
	}
	return at[1] != "join", nil
}

// show is the event as the reader sees it, and whether they see it at all: canSee,
// then pruned if its sender was erased (see prune). Callers that render events
// call loadErased for their rows first.
func (v *visibility) show(ctx context.Context, r eventRow) (eventRow, bool, error) {
	ok, err := v.canSee(ctx, r)
	if err != nil || !ok {
		return r, false, err
	}
	prune := expired(r)
	if !prune && len(v.erased) > 0 {
		if prune, err = v.prune(ctx, r); err != nil {
			return r, false, err
		}
	}
	if !prune {
		return r, true, nil
	}
	impl, err := v.s.RoomVersion(ctx, r.roomID)
	if err != nil {
		return r, false, fmt.Errorf("prune erased user's event %s: %w", r.eventID, err)
	}
	redacted, err := impl.RedactEventJSON([]byte(r.json))
	if err != nil {
		return r, false, fmt.Errorf("prune erased user's event %s: %w", r.eventID, err)
	}
	r.json = string(redacted)
	return r, true, nil
}

// selfDestructPath is MSC2228's content key: the time (ms since the epoch) after
// which the sender wants the message gone.
const selfDestructPath = `content.org\.matrix\.self_destruct_after`

// expired reports whether the event asked to self-destruct (MSC2228) and its time
// has passed: it is then shown pruned, to everyone, as Synapse's ephemeral messages
// do. The stored event keeps its content (a read-time rule, not a purge).
func expired(r eventRow) bool {
	if !strings.Contains(r.json, "self_destruct_after") {
		return false
	}
	at := gjson.Get(r.json, selfDestructPath)
	return at.Type == gjson.Number && at.Int() <= time.Now().UnixMilli()
}

// loadErased looks up, in one query, which local senders of rows not looked up yet
// were erased. Only erased senders stay in the map, so an empty map (the common
// case) costs show nothing.
func (v *visibility) loadErased(ctx context.Context, rows []eventRow) error {
	if v.s.cfg.Erasures == nil {
		return nil
	}
	var senders []string
	for _, r := range rows {
		if !v.checked[r.sender] && v.s.isLocal(r.sender) && !slices.Contains(senders, r.sender) {
			senders = append(senders, r.sender)
		}
	}
	if len(senders) == 0 {
		return nil
	}
	erased, err := v.s.cfg.Erasures.ErasedUsers(ctx, senders)
	if err != nil {
		return fmt.Errorf("erased senders: %w", err)
	}
	if v.checked == nil {
		v.checked = map[string]bool{}
	}
	for _, u := range senders {
		v.checked[u] = true
		if erased[u] {
			v.erased[u] = true
		}
	}
	return nil
}

// visibleAt is canSee once (history visibility, membership) before the event is
// known.
func (v *visibility) visibleAt(r eventRow, at [2]string) bool {
	if visibleTo(v.reader, at[0], at[1], v.currentlyIn) {
		return true
	}
	// A history visibility change is shown to whoever the visibility before or
	// after it lets see it (the spec's "History visibility"; Synapse does the
	// same), so a reader sees the boundary where history opens to them.
	if r.typ == "m.room.history_visibility" && r.stateKey != nil && *r.stateKey == "" {
		if after := gjson.Get(r.json, "content.history_visibility").String(); after != "" {
			return visibleTo(v.reader, after, at[1], v.currentlyIn)
		}
	}
	return false
}

// at is (history visibility, membership) in the state before the event.
func (v *visibility) at(ctx context.Context, r eventRow) ([2]string, error) {
	if r.snapshotBefore == 0 && r.typ != spec.MRoomCreate {
		// The state before the event is unknown here (an outlier: an auth event
		// fetched from another server, a rejected event): judged by the room as
		// it is now, not as if it had no history visibility at all.
		return v.s.visibilityNow(ctx, v.roomID, v.reader)
	}
	if at, ok := v.bySnapshot[r.snapshotBefore]; ok {
		return at, nil
	}
	key := seenKey{r.snapshotBefore, v.reader.cacheKey()}
	v.s.seenMu.Lock()
	at, ok := v.s.seen[key]
	v.s.seenMu.Unlock()
	if !ok {
		var err error
		if at, err = v.s.visibilityAt(ctx, r.snapshotBefore, v.reader); err != nil {
			return at, err
		}
		v.s.seenMu.Lock()
		if len(v.s.seen) >= maxSeen {
			clear(v.s.seen)
		}
		v.s.seen[key] = at
		v.s.seenMu.Unlock()
	}
	v.bySnapshot[r.snapshotBefore] = at
	return at, nil
}

// visibilityAt reads (history visibility, membership) in a state snapshot.
func (s *Service) visibilityAt(ctx context.Context, snapshot int64, r Reader) ([2]string, error) {
	keys := [][2]string{{"m.room.history_visibility", ""}}
	if r.UserID != "" {
		keys = append(keys, [2]string{spec.MRoomMember, r.UserID})
	}
	ids, err := s.snapshotState(ctx, snapshot, keys)
	if err != nil {
		return [2]string{}, err
	}
	at := [2]string{"shared", ""}
	if id, ok := ids[[2]string{"m.room.history_visibility", ""}]; ok {
		var raw string
		if err := s.db.QueryRow(ctx, `SELECT json FROM events WHERE event_id = $1`, id).Scan(&raw); err != nil {
			return at, fmt.Errorf("read history visibility %s: %w", id, err)
		}
		if hv := gjson.Get(raw, "content.history_visibility").String(); hv != "" {
			at[0] = hv
		}
	}
	var memberIDs []string
	if r.UserID != "" {
		if id, ok := ids[[2]string{spec.MRoomMember, r.UserID}]; ok {
			memberIDs = []string{id}
		}
	} else if memberIDs, err = s.serverMemberIDsAt(ctx, snapshot, r.ServerName); err != nil {
		return at, err
	}
	if len(memberIDs) > 0 {
		marks, args := storage.InList(memberIDs)
		rows, err := s.db.Query(ctx, `SELECT membership FROM events WHERE event_id IN (`+marks+`)`, args...)
		if err != nil {
			return at, fmt.Errorf("read memberships: %w", err)
		}
		ms, err := scanNullStrings(rows)
		if err != nil {
			return at, fmt.Errorf("read memberships: %w", err)
		}
		at[1] = bestMembership(ms)
	}
	return at, nil
}

// visibilityNow is (history visibility, membership) in the room's current state.
func (s *Service) visibilityNow(ctx context.Context, roomID string, r Reader) ([2]string, error) {
	hv, err := s.currentHistoryVisibility(ctx, roomID)
	if err != nil {
		return [2]string{}, fmt.Errorf("read history visibility of %s: %w", roomID, err)
	}
	if hv == "" {
		hv = "shared"
	}
	if r.UserID != "" {
		m, err := s.CurrentMembership(ctx, roomID, r.UserID)
		return [2]string{hv, m}, err
	}
	rows, err := s.db.Query(ctx, `SELECT state_key, membership FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
		AND state_key LIKE $2 ESCAPE '\'`, roomID, serverSuffixPattern(r.ServerName))
	if err != nil {
		return [2]string{}, fmt.Errorf("read memberships of %s in %s: %w", r.ServerName, roomID, err)
	}
	defer rows.Close()
	var ms []string
	for rows.Next() {
		var user string
		var m sql.NullString
		if err := rows.Scan(&user, &m); err != nil {
			return [2]string{}, err
		}
		if serverOf(user) == r.ServerName {
			ms = append(ms, m.String)
		}
	}
	return [2]string{hv, bestMembership(ms)}, rows.Err()
}

// serverSuffixPattern is a LIKE pattern for the user IDs of a server, its name
// escaped so that only the suffix position matters (callers still compare the
// server part exactly).
func serverSuffixPattern(server string) string {
	return "%:" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(server)
}

// bestMembership is the membership that shows a server the most: join, else invite.
func bestMembership(ms []string) string {
	best := ""
	for _, m := range ms {
		switch {
		case m == "join":
			return m
		case m == "invite":
			best = m
		}
	}
	return best
}

func scanNullStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v sql.NullString
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v.String)
	}
	return out, rows.Err()
}

// filterRows keeps the rows of roomID the reader may see: the one filter of every
// read. (The rows' own room decides; roomID names the room the caller read.)
func (s *Service) filterRows(ctx context.Context, roomID string, r Reader, rows []eventRow) ([]eventRow, error) {
	return s.filterMixedRows(ctx, r, rows)
}

// filterMixedRows is filterRows for rows that may come from several rooms, keeping
// their order.
func (s *Service) filterMixedRows(ctx context.Context, r Reader, rows []eventRow) ([]eventRow, error) {
	byRoom := map[string]*visibility{}
	out := rows[:0:0]
	for _, row := range rows {
		v := byRoom[row.roomID]
		if v == nil {
			var err error
			if v, err = s.newVisibility(ctx, row.roomID, r); err != nil {
				return nil, err
			}
			if err := v.loadErased(ctx, rows); err != nil {
				return nil, err
			}
			byRoom[row.roomID] = v
		}
		shown, ok, err := v.show(ctx, row)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, shown)
		}
	}
	return out, nil
}

// Event returns one event if the user may see it. Events other servers sent that
// the auth rules refused (rejected) or that the room's state refused when they came
// (soft-failed) are kept for the DAG but never shown to clients, by ID neither.
func (s *Service) Event(ctx context.Context, roomID, userID, eventID string) (ClientEvent, error) {
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
		WHERE event_id = $1 AND room_id = $2 AND NOT rejected AND NOT soft_failed`, eventID, roomID)
	if err != nil {
		return ClientEvent{}, err
	}
	if rows, err = s.filterRows(ctx, roomID, User(userID), rows); err != nil {
		return ClientEvent{}, err
	}
	if len(rows) == 0 {
		// Hidden is indistinguishable from missing, so the answer leaks nothing.
		return ClientEvent{}, mxerror.New(mxerror.NotFound, "event not found")
	}
	ev := []ClientEvent{rows[0].clientEvent()}
	if err := s.bundle(ctx, userID, ev); err != nil {
		return ClientEvent{}, err
	}
	return ev[0], nil
}

// MessagesQuery is /messages.
type MessagesQuery struct {
	From, To string
	// Backward is dir=b.
	Backward bool
	Limit    int
	Filter   *filter.RoomEventFilter
	// DeviceID is the caller's device: events it sent carry their transaction_id
	// in unsigned, so the client can match them to its local echo.
	DeviceID string
	// Backfill lets a backward page that runs out of history held here ask a
	// server in the room for what came before (/messages does; sync does not).
	Backfill bool
	// CurrentState shows a joined member (anyone, in a world-readable room) the
	// events of the room's current state even where the history visibility hides
	// them (sync's timeline does, as Synapse's: a member who rejoins sees the joins
	// made while away, a peeker the room's creation).
	CurrentState bool
}

// Messages is a page of a room's timeline.
type Messages struct {
	Chunk []ClientEvent `json:"chunk"`
	Start string        `json:"start"`
	End   string        `json:"end,omitempty"`
	State []ClientEvent `json:"state,omitempty"`
}

const maxMessagesLimit = 1000

// checkCanPage is who may page through a room's history at all (/messages, native
// history): anyone who has ever been in it, or anyone while it is world_readable;
// which events they then see is the visibility filter's.
func (s *Service) checkCanPage(ctx context.Context, roomID, userID string) error {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m == "" {
		if vis, _ := s.currentHistoryVisibility(ctx, roomID); vis != "world_readable" {
			return mxerror.New(mxerror.Forbidden, "you are not in room %s", roomID)
		}
	}
	return nil
}

// Messages pages through a room's timeline from a token, keeping only events the user
// may see and that pass the filter.
func (s *Service) Messages(ctx context.Context, roomID, userID string, q MessagesQuery) (Messages, error) {
	if err := s.checkCanPage(ctx, roomID, userID); err != nil {
		return Messages{}, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 10
	}
	if limit > maxMessagesLimit {
		limit = maxMessagesLimit
	}
	if q.Filter != nil && q.Filter.Limit != nil && *q.Filter.Limit > 0 && *q.Filter.Limit < limit {
		limit = *q.Filter.Limit
	}
	// Positions run from minPos (the oldest history backfilled from other servers
	// sits below zero) to maxPos.
	const minPos, maxPos = -(1 << 62), 1<<62 - 1
	var from int64
	var err error
	switch {
	case q.From != "":
		if from, err = ParseToken(q.From); err != nil {
			return Messages{}, err
		}
	case q.Backward:
		from = maxPos
	default:
		from = minPos
	}
	var to int64
	if q.Backward {
		to = minPos - 1
	} else {
		to = maxPos
	}
	if q.To != "" {
		if to, err = ParseToken(q.To); err != nil {
			return Messages{}, err
		}
	}
	v, err := s.newVisibility(ctx, roomID, User(userID))
	if err != nil {
		return Messages{}, err
	}
	res := Messages{Start: q.From, Chunk: []ClientEvent{}}
	if res.Start == "" {
		res.Start = Token(from)
	}
	cursor := from
	exhausted := false
	backfills := 0
	backfillFailed := false
	const page = 100
	for pages := 0; len(res.Chunk) < limit && pages < 20; pages++ {
		var rows []eventRow
		if q.Backward {
			rows, err = s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 AND stream_pos <= $2 AND stream_pos > $3
				AND NOT outlier ORDER BY stream_pos DESC LIMIT $4`, roomID, cursor, to, page)
		} else {
			rows, err = s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3
				AND NOT outlier ORDER BY stream_pos LIMIT $4`, roomID, cursor, to, page)
		}
		if err != nil {
			return Messages{}, err
		}
		if err := v.loadErased(ctx, rows); err != nil {
			return Messages{}, err
		}
		read := 0
		for _, r := range rows {
			read++
			if q.Backward {
				cursor = r.pos - 1
			} else {
				cursor = r.pos
			}
			r, ok, err := v.show(ctx, r)
			if err == nil && !ok && q.CurrentState {
				ok, err = v.isCurrentState(ctx, r)
			}
			if err != nil {
				return Messages{}, err
			}
			if ok && matches(q.Filter, r) {
				res.Chunk = append(res.Chunk, r.clientEvent())
				if len(res.Chunk) == limit {
					break
				}
			}
		}
		if len(rows) < page {
			// Paging back past the oldest event held here: ask a server in the
			// room for the history before it, a few times per request at most.
			if q.Backfill && q.Backward && q.To == "" && len(res.Chunk) < limit && s.remote != nil && backfills < 3 {
				backfills++
				if n, err := s.backfill(ctx, roomID, limit-len(res.Chunk)); err != nil {
					slog.Info("backfill", "room_id", roomID, "err", err)
					backfillFailed = true
				} else if n > 0 {
					continue
				}
			}
			// The range is exhausted when the last row read was its last one:
			// then there is nothing further, even if the chunk is full, and a
			// sync's timeline built from it is not limited — unless other
			// servers hold history from before it, which the next page fetches.
			if len(res.Chunk) < limit || read == len(rows) {
				exhausted = true // no end token
				if q.Backfill && q.Backward && q.To == "" && s.remote != nil && (backfillFailed || len(res.Chunk) == limit) {
					// History may still be had from other servers (this time the
					// asking failed, or the page is full): the client pages on.
					if more, err := s.historyElsewhere(ctx, roomID); err != nil || more {
						exhausted = false
					}
				}
			}
			break
		}
	}
	switch {
	case !exhausted && len(res.Chunk) > 0:
		res.End = Token(cursor)
	case !q.Backward && q.To == "":
		// Paging forward reached the live end: the token to go on from when more
		// arrives, as Synapse gives (a sync's next_batch works the same way).
		// Backward, a missing end is how a client knows it reached the start.
		res.End = Token(cursor)
	}
	if q.Filter != nil && q.Filter.LazyLoadMembers {
		if res.State, err = s.memberEventsFor(ctx, roomID, res.Chunk); err != nil {
			return Messages{}, err
		}
	}
	if err := s.addTransactionIDs(ctx, userID, q.DeviceID, res.Chunk); err != nil {
		return Messages{}, err
	}
	return res, s.bundle(ctx, userID, res.Chunk)
}

// memberEventsFor returns the current member events of the senders of events, for
// lazy-loading clients.
func (s *Service) memberEventsFor(ctx context.Context, roomID string, events []ClientEvent) ([]ClientEvent, error) {
	seen := map[string]bool{}
	out := []ClientEvent{}
	for _, ev := range events {
		if seen[ev.Sender] {
			continue
		}
		seen[ev.Sender] = true
		rows, err := s.queryEvents(ctx, `SELECT `+prefixed("e.", eventColumns)+` FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomID, ev.Sender)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out = append(out, r.clientEvent())
		}
	}
	return out, nil
}

// matches applies a room event filter to a stored event.
func matches(f *filter.RoomEventFilter, r eventRow) bool {
	if f == nil {
		return true
	}
	if f.Types != nil && !anyMatch(*f.Types, r.typ) {
		return false
	}
	if anyMatch(f.NotTypes, r.typ) {
		return false
	}
	if f.Senders != nil && !contains(*f.Senders, r.sender) {
		return false
	}
	if contains(f.NotSenders, r.sender) {
		return false
	}
	if f.ContainsURL != nil {
		has := gjson.Get(r.json, "content.url").Exists()
		if has != *f.ContainsURL {
			return false
		}
	}
	return true
}

// anyMatch reports whether typ matches one of the patterns; '*' is a wildcard.
func anyMatch(patterns []string, typ string) bool {
	for _, p := range patterns {
		if p == typ || p == "*" || strings.HasSuffix(p, "*") && strings.HasPrefix(typ, strings.TrimSuffix(p, "*")) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// addTransactionIDs sets unsigned.transaction_id on the events the device sent.
func (s *Service) addTransactionIDs(ctx context.Context, userID, deviceID string, events []ClientEvent) error {
	if deviceID == "" {
		return nil
	}
	local := strings.TrimPrefix(strings.TrimSuffix(userID, ":"+s.cfg.ServerName), "@")
	for i := range events {
		if events[i].Sender != userID {
			continue
		}
		var txn string
		err := s.db.QueryRow(ctx, `SELECT txn_id FROM transaction_ids WHERE localpart = $1 AND device_id = $2 AND event_id = $3`,
			local, deviceID, events[i].EventID).Scan(&txn)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read transaction ID: %w", err)
		}
		events[i].Unsigned["transaction_id"] = txn
	}
	return nil
}
