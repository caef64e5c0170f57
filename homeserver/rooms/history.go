package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// visibility decides which historical events a user may see, by the room's
// m.room.history_visibility and the user's membership at each event. One instance
// serves one request and caches per state snapshot.
type visibility struct {
	s           *Service
	userID      string
	roomID      string
	currentlyIn bool
	bySnapshot  map[int64][2]string // snapshot → (history visibility, membership)
}

func (s *Service) newVisibility(ctx context.Context, roomID, userID string) (*visibility, error) {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	return &visibility{s: s, userID: userID, roomID: roomID, currentlyIn: m == "join", bySnapshot: map[int64][2]string{}}, nil
}

func (v *visibility) canSee(ctx context.Context, r eventRow) (bool, error) {
	at, ok := v.bySnapshot[r.snapshotBefore]
	key := seenKey{r.snapshotBefore, v.userID}
	if !ok {
		v.s.seenMu.Lock()
		at, ok = v.s.seen[key]
		v.s.seenMu.Unlock()
	}
	if !ok {
		ids, err := v.s.snapshotState(ctx, r.snapshotBefore, [][2]string{{"m.room.history_visibility", ""}, {spec.MRoomMember, v.userID}})
		if err != nil {
			return false, err
		}
		at = [2]string{"shared", ""}
		if id, ok := ids[[2]string{"m.room.history_visibility", ""}]; ok {
			var raw string
			if err := v.s.db.QueryRow(ctx, `SELECT json FROM events WHERE event_id = $1`, id).Scan(&raw); err != nil {
				return false, fmt.Errorf("read history visibility: %w", err)
			}
			if hv := gjson.Get(raw, "content.history_visibility").String(); hv != "" {
				at[0] = hv
			}
		}
		if id, ok := ids[[2]string{spec.MRoomMember, v.userID}]; ok {
			var m sql.NullString
			if err := v.s.db.QueryRow(ctx, `SELECT membership FROM events WHERE event_id = $1`, id).Scan(&m); err != nil {
				return false, fmt.Errorf("read membership: %w", err)
			}
			at[1] = m.String
		}
		v.s.seenMu.Lock()
		if len(v.s.seen) >= maxSeen {
			clear(v.s.seen)
		}
		v.s.seen[key] = at
		v.s.seenMu.Unlock()
	}
	v.bySnapshot[r.snapshotBefore] = at
	hv, membership := at[0], at[1]
	// A user always sees their own membership changes.
	if r.typ == spec.MRoomMember && r.stateKey != nil && *r.stateKey == v.userID {
		return true, nil
	}
	switch {
	case hv == "world_readable", membership == "join":
		return true, nil
	case hv == "shared":
		return v.currentlyIn, nil
	case hv == "invited":
		return membership == "invite", nil
	}
	return false, nil
}

// Event returns one event if the user may see it.
func (s *Service) Event(ctx context.Context, roomID, userID, eventID string) (ClientEvent, error) {
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1 AND room_id = $2`, eventID, roomID)
	if err != nil {
		return ClientEvent{}, err
	}
	if len(rows) == 0 {
		return ClientEvent{}, mxerror.New(mxerror.NotFound, "event not found")
	}
	v, err := s.newVisibility(ctx, roomID, userID)
	if err != nil {
		return ClientEvent{}, err
	}
	ok, err := v.canSee(ctx, rows[0])
	if err != nil {
		return ClientEvent{}, err
	}
	if !ok {
		// Indistinguishable from a missing event, so the answer leaks nothing.
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
}

// Messages is a page of a room's timeline.
type Messages struct {
	Chunk []ClientEvent `json:"chunk"`
	Start string        `json:"start"`
	End   string        `json:"end,omitempty"`
	State []ClientEvent `json:"state,omitempty"`
}

const maxMessagesLimit = 1000

// Messages pages through a room's timeline from a token, keeping only events the user
// may see and that pass the filter.
func (s *Service) Messages(ctx context.Context, roomID, userID string, q MessagesQuery) (Messages, error) {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return Messages{}, err
	}
	if m == "" {
		if vis, _ := s.currentHistoryVisibility(ctx, roomID); vis != "world_readable" {
			return Messages{}, mxerror.New(mxerror.Forbidden, "you are not in room %s", roomID)
		}
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
	v, err := s.newVisibility(ctx, roomID, userID)
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
		read := 0
		for _, r := range rows {
			read++
			if q.Backward {
				cursor = r.pos - 1
			} else {
				cursor = r.pos
			}
			ok, err := v.canSee(ctx, r)
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
	if !exhausted && len(res.Chunk) > 0 {
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
