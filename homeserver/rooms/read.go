package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

func (s *Service) isLocalRoom(roomID string) bool {
	return strings.HasSuffix(roomID, ":"+s.cfg.ServerName)
}

// isLocal reports whether a user ID is one of this server's users.
func (s *Service) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.cfg.ServerName)
}

func (s *Service) roomExists(ctx context.Context, roomID string) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM rooms WHERE room_id = $1`, roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// ClientEvent is an event in the client–server API's format.
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
	// StreamPos orders the event among all events; not sent to clients.
	StreamPos int64 `json:"-"`
	// Seq numbers the room's events 1, 2, 3, … (the native protocol's seq).
	Seq int64 `json:"-"`
}

// eventRow is an event as stored.
type eventRow struct {
	pos            int64
	eventID        string
	roomID         string
	typ            string
	stateKey       *string
	sender         string
	originTS       int64
	snapshotBefore int64
	membership     sql.NullString
	redactedBy     sql.NullString
	json           string
	seq            int64
}

const eventColumns = `stream_pos, event_id, room_id, type, state_key, sender, origin_ts, snapshot_before, membership, redacted_by, json, room_seq`

func scanEvent(sc interface{ Scan(...any) error }) (eventRow, error) {
	var r eventRow
	err := sc.Scan(&r.pos, &r.eventID, &r.roomID, &r.typ, &r.stateKey, &r.sender, &r.originTS, &r.snapshotBefore, &r.membership, &r.redactedBy, &r.json, &r.seq)
	return r, err
}

func (s *Service) queryEvents(ctx context.Context, q string, args ...any) ([]eventRow, error) {
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []eventRow
	for rows.Next() {
		r, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// clientEvents renders stored events for clients.
func clientEvents(rows []eventRow) []ClientEvent {
	out := make([]ClientEvent, len(rows))
	for i, r := range rows {
		out[i] = r.clientEvent()
	}
	return out
}

// clientEvent renders a stored event for clients.
func (r eventRow) clientEvent() ClientEvent {
	ev := ClientEvent{
		Content:        json.RawMessage(gjson.Get(r.json, "content").Raw),
		EventID:        r.eventID,
		OriginServerTS: r.originTS,
		RoomID:         r.roomID,
		Sender:         r.sender,
		StateKey:       r.stateKey,
		Type:           r.typ,
		Redacts:        gjson.Get(r.json, "redacts").String(),
		StreamPos:      r.pos,
		Seq:            r.seq,
		Unsigned:       map[string]any{"age": time.Now().UnixMilli() - r.originTS},
	}
	if len(ev.Content) == 0 {
		ev.Content = json.RawMessage("{}")
	}
	if ev.Redacts == "" && r.typ == spec.MRoomRedaction {
		ev.Redacts = gjson.Get(r.json, "content.redacts").String()
	}
	if r.redactedBy.Valid {
		ev.Unsigned["redacted_because"] = map[string]string{"event_id": r.redactedBy.String}
		ev.Unsigned["redacted_by"] = r.redactedBy.String // Synapse's field, which clients and Sytest read
	}
	return ev
}

// RequireJoined returns M_FORBIDDEN unless the user is joined to the room now: the
// rule for typing notifications and read receipts, whichever front-end sends them.
func (s *Service) RequireJoined(ctx context.Context, roomID, userID string) error {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return mxerror.New(mxerror.Forbidden, "you are not in room %s", roomID)
	}
	return nil
}

// CurrentMembership is the user's membership in the room now; "" if none.
func (s *Service) CurrentMembership(ctx context.Context, roomID, userID string) (string, error) {
	var m sql.NullString
	err := s.db.QueryRow(ctx, `SELECT membership FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`,
		roomID, userID).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read membership: %w", err)
	}
	return m.String, nil
}

// PowerFor returns the user's power level in the room and the level needed to send
// a state event of eventType. In room versions with privileged creators (v12) the
// creators outrank everyone: their level is math.MaxInt64. Without a power levels
// event the creator has 100, as the auth rules say.
func (s *Service) PowerFor(ctx context.Context, roomID, userID, eventType string) (int64, int64, error) {
	rows, err := s.db.Query(ctx, `SELECT c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type IN ('m.room.create', 'm.room.power_levels') AND c.state_key = ''`, roomID)
	if err != nil {
		return 0, 0, fmt.Errorf("read power levels: %w", err)
	}
	var create, pl gjson.Result
	for rows.Next() {
		var typ, raw string
		if err := rows.Scan(&typ, &raw); err != nil {
			rows.Close()
			return 0, 0, fmt.Errorf("read power levels: %w", err)
		}
		if typ == spec.MRoomCreate {
			create = gjson.Parse(raw)
		} else {
			pl = gjson.Parse(raw)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("read power levels: %w", err)
	}
	if isCreator(create, userID) {
		if impl, err := versionImpl(create.Get("content.room_version").String()); err == nil && impl.PrivilegedCreators() {
			return math.MaxInt64, 0, nil
		}
	}
	if !pl.Exists() {
		if isCreator(create, userID) {
			return 100, 0, nil
		}
		return 0, 0, nil
	}
	content := pl.Get("content")
	user := content.Get("users_default").Int()
	if u := content.Get("users." + gjson.Escape(userID)); u.Exists() {
		user = u.Int()
	}
	need := content.Get("state_default").Int()
	if !content.Get("state_default").Exists() {
		need = 50
	}
	if e := content.Get("events." + gjson.Escape(eventType)); e.Exists() {
		need = e.Int()
	}
	return user, need, nil
}

// isCreator reports whether userID created the room of the create event: its
// sender, or one of the additional creators of room version 12.
func isCreator(create gjson.Result, userID string) bool {
	if !create.Exists() {
		return false
	}
	if create.Get("sender").String() == userID {
		return true
	}
	for _, c := range create.Get("content.additional_creators").Array() {
		if c.String() == userID {
			return true
		}
	}
	return false
}

// checkJoined returns M_FORBIDDEN unless the user can read the room's current
// state: joined, or the room is world-readable.
func (s *Service) checkCanReadCurrent(ctx context.Context, roomID, userID string) error {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m == "join" {
		return nil
	}
	if vis, _ := s.currentHistoryVisibility(ctx, roomID); vis == "world_readable" {
		return nil
	}
	if ok, err := s.roomExists(ctx, roomID); err != nil {
		return err
	} else if !ok {
		return mxerror.New(mxerror.Forbidden, "you are not in room %s", roomID)
	}
	return mxerror.New(mxerror.Forbidden, "you are not in room %s", roomID)
}

func (s *Service) currentHistoryVisibility(ctx context.Context, roomID string) (string, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.history_visibility' AND c.state_key = ''`, roomID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return "shared", nil
	}
	if err != nil {
		return "", err
	}
	return gjson.Get(raw, "content.history_visibility").String(), nil
}

// State returns the room's current state. A user who left sees the state at the
// moment they left.
func (s *Service) State(ctx context.Context, roomID, userID string) ([]ClientEvent, error) {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if m == "leave" || m == "ban" {
		return s.stateAtLeave(ctx, roomID, userID)
	}
	if err := s.checkCanReadCurrent(ctx, roomID, userID); err != nil {
		return nil, err
	}
	rows, err := s.queryEvents(ctx, `SELECT `+prefixed("e.", eventColumns)+` FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 ORDER BY e.stream_pos`, roomID)
	if err != nil {
		return nil, err
	}
	return clientEvents(rows), nil
}

// stateAtLeave is the room's state right after the user's leave (or ban).
func (s *Service) stateAtLeave(ctx context.Context, roomID, userID string) ([]ClientEvent, error) {
	var snap int64
	err := s.db.QueryRow(ctx, `SELECT c.stream_pos FROM current_state c WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`,
		roomID, userID).Scan(&snap)
	if err != nil {
		return nil, fmt.Errorf("find leave: %w", err)
	}
	ids, err := s.snapshotState(ctx, snap, nil)
	if err != nil {
		return nil, err
	}
	return s.eventsByID(ctx, ids)
}

// StateEvent returns one current state event (for a user who left, as it was when
// they left).
func (s *Service) StateEvent(ctx context.Context, roomID, userID, typ, stateKey string) (ClientEvent, error) {
	m, err := s.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return ClientEvent{}, err
	}
	var rows []eventRow
	if m == "leave" || m == "ban" {
		var snap int64
		if err := s.db.QueryRow(ctx, `SELECT stream_pos FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`,
			roomID, userID).Scan(&snap); err != nil {
			return ClientEvent{}, fmt.Errorf("find leave: %w", err)
		}
		ids, err := s.snapshotState(ctx, snap, [][2]string{{typ, stateKey}})
		if err != nil {
			return ClientEvent{}, err
		}
		evs, err := s.eventsByID(ctx, ids)
		if err != nil || len(evs) == 0 {
			return ClientEvent{}, notFoundState(typ, stateKey, err)
		}
		return evs[0], nil
	}
	if err := s.checkCanReadCurrent(ctx, roomID, userID); err != nil {
		return ClientEvent{}, err
	}
	rows, err = s.queryEvents(ctx, `SELECT `+prefixed("e.", eventColumns)+` FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = $2 AND c.state_key = $3`, roomID, typ, stateKey)
	if err != nil || len(rows) == 0 {
		return ClientEvent{}, notFoundState(typ, stateKey, err)
	}
	return rows[0].clientEvent(), nil
}

func notFoundState(typ, stateKey string, err error) error {
	if err != nil {
		return err
	}
	return mxerror.New(mxerror.NotFound, "no %s state event with key %q", typ, stateKey)
}

func prefixed(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
}

// snapshotState resolves a state snapshot to its event IDs by (type, state_key),
// walking at most snapshotChainLimit deltas. With keys, only those tuples are read.
func (s *Service) snapshotState(ctx context.Context, snapshot int64, keys [][2]string) (map[[2]string]string, error) {
	return s.snapshotStateWhere(ctx, snapshot, keys, "")
}

// serverMemberIDsAt returns the IDs of the member events, in a state snapshot, of
// the users of server.
func (s *Service) serverMemberIDsAt(ctx context.Context, snapshot int64, server string) ([]string, error) {
	state, err := s.snapshotStateWhere(ctx, snapshot, nil, server)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k, id := range state {
		if k[0] == spec.MRoomMember && serverOf(k[1]) == server {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// snapshotStateWhere is snapshotState that, with memberServer set (and no keys),
// reads only the member events of that server's users.
func (s *Service) snapshotStateWhere(ctx context.Context, snapshot int64, keys [][2]string, memberServer string) (map[[2]string]string, error) {
	// First the chain (at most snapshotChainLimit ids), then its entries by primary
	// key, so that a key-restricted lookup reads a handful of index entries even
	// when the chain ends in a full copy of a 10 000-member room.
	// Each step is a correlated primary-key lookup rather than a join: PostgreSQL
	// plans a join in a recursive term blind to the work table's size, and on a
	// table without statistics yet (a fresh or fast-growing database) chose a hash
	// join that scanned all of state_snapshots at every step.
	rows, err := s.db.Query(ctx, `WITH RECURSIVE chain(id, n) AS (
		SELECT snapshot_id, 0 FROM state_snapshots WHERE snapshot_id = $1
		UNION ALL
		SELECT (SELECT s.parent FROM state_snapshots s WHERE s.snapshot_id = c.id), c.n + 1 FROM chain c WHERE c.id IS NOT NULL)
	SELECT id FROM chain WHERE id IS NOT NULL ORDER BY n`, snapshot)
	if err != nil {
		return nil, fmt.Errorf("resolve snapshot %d: %w", snapshot, err)
	}
	var chain []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		chain = append(chain, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rank := make(map[int64]int, len(chain))
	args := make([]any, 0, len(chain)+2*len(keys))
	marks := make([]string, 0, len(chain))
	for i, id := range chain {
		rank[id] = i
		args = append(args, id)
		marks = append(marks, fmt.Sprintf("$%d", len(args)))
	}
	if len(chain) == 0 {
		return map[[2]string]string{}, nil
	}
	q := `SELECT snapshot_id, type, state_key, event_id FROM state_snapshot_entries WHERE snapshot_id IN (` + strings.Join(marks, ", ") + `)`
	if len(keys) > 0 {
		var conds []string
		for _, k := range keys {
			args = append(args, k[0], k[1])
			conds = append(conds, fmt.Sprintf("(type = $%d AND state_key = $%d)", len(args)-1, len(args)))
		}
		q += " AND (" + strings.Join(conds, " OR ") + ")"
	} else if memberServer != "" {
		args = append(args, serverSuffixPattern(memberServer))
		q += fmt.Sprintf(` AND type = 'm.room.member' AND state_key LIKE $%d ESCAPE '\'`, len(args))
	}
	rows, err = s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("resolve snapshot %d: %w", snapshot, err)
	}
	defer rows.Close()
	out := map[[2]string]string{}
	best := map[[2]string]int{}
	for rows.Next() {
		var snap int64
		var typ, key, id string
		if err := rows.Scan(&snap, &typ, &key, &id); err != nil {
			return nil, err
		}
		k := [2]string{typ, key}
		if r, seen := best[k]; !seen || rank[snap] < r { // nearer deltas win
			best[k], out[k] = rank[snap], id
		}
	}
	return out, rows.Err()
}

// eventsByID loads events in batches, in stream order.
func (s *Service) eventsByID(ctx context.Context, ids map[[2]string]string) ([]ClientEvent, error) {
	all := make([]string, 0, len(ids))
	for _, id := range ids {
		all = append(all, id)
	}
	out := make([]ClientEvent, 0, len(ids))
	const batch = 500
	for len(all) > 0 {
		n := min(batch, len(all))
		marks, args := storage.InList(all[:n])
		all = all[n:]
		rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+marks+`)`, args...)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out = append(out, r.clientEvent())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StreamPos < out[j].StreamPos })
	return out, nil
}

// JoinedRooms lists the rooms the user is joined to.
func (s *Service) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join' ORDER BY room_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("joined rooms: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// JoinedMember is one entry of /joined_members: a member's room profile. Both keys are always present, null when
// unset, as Synapse answers and clients (and Sytest) expect.
type JoinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// JoinedMembers lists a room's joined members with their room profile.
func (s *Service) JoinedMembers(ctx context.Context, roomID, userID string) (map[string]JoinedMember, error) {
	if err := s.checkCanReadCurrent(ctx, roomID, userID); err != nil {
		return nil, err
	}
	s.awaitFullState(ctx, roomID)
	rows, err := s.db.Query(ctx, `SELECT c.state_key, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("joined members: %w", err)
	}
	defer rows.Close()
	out := map[string]JoinedMember{}
	for rows.Next() {
		var user, raw string
		if err := rows.Scan(&user, &raw); err != nil {
			return nil, err
		}
		var m JoinedMember
		if v := gjson.Get(raw, "content.displayname"); v.Type == gjson.String {
			s := v.String()
			m.DisplayName = &s
		}
		if v := gjson.Get(raw, "content.avatar_url"); v.Type == gjson.String {
			s := v.String()
			m.AvatarURL = &s
		}
		out[user] = m
	}
	return out, rows.Err()
}

// MembersQuery selects /members.
type MembersQuery struct {
	// At is a position token ("sN"); empty means now.
	At            string
	Membership    string
	NotMembership string
}

// Members returns the room's member events, now or at a position. While the
// room's state is partial it waits for the rest, as JoinedMembers does.
func (s *Service) Members(ctx context.Context, roomID, userID string, q MembersQuery) ([]ClientEvent, error) {
	var events []ClientEvent
	var err error
	s.awaitFullState(ctx, roomID)
	if q.At == "" {
		events, err = s.State(ctx, roomID, userID)
	} else {
		pos, perr := ParseToken(q.At)
		if perr != nil {
			return nil, perr
		}
		if err := s.checkCanReadCurrent(ctx, roomID, userID); err != nil {
			return nil, err
		}
		events, err = s.stateAtPosition(ctx, roomID, pos)
	}
	if err != nil {
		return nil, err
	}
	out := []ClientEvent{}
	for _, ev := range events {
		if ev.Type != spec.MRoomMember {
			continue
		}
		m := gjson.GetBytes(ev.Content, "membership").String()
		if q.Membership != "" && m != q.Membership || q.NotMembership != "" && m == q.NotMembership {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}

// stateAtPosition is the room's state after the last event at or before pos.
func (s *Service) stateAtPosition(ctx context.Context, roomID string, pos int64) ([]ClientEvent, error) {
	return s.stateAtPositionFor(ctx, roomID, pos, nil)
}

// stateAtPositionFor is stateAtPosition that, when members is not nil, keeps only the
// member events of those users (lazy loading) and loads nothing else of the roster.
func (s *Service) stateAtPositionFor(ctx context.Context, roomID string, pos int64, members map[string]bool) ([]ClientEvent, error) {
	var evPos, before int64
	var stateKey sql.NullString
	err := s.db.QueryRow(ctx, `SELECT stream_pos, state_key, snapshot_before FROM events WHERE room_id = $1 AND stream_pos <= $2
		AND stream_pos > 0 ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&evPos, &stateKey, &before)
	if errors.Is(err, sql.ErrNoRows) {
		// Before the room's timeline here began: the state its first event saw,
		// which for a room joined over federation is the state the join brought.
		err = s.db.QueryRow(ctx, `SELECT snapshot_before FROM events WHERE room_id = $1 AND stream_pos > 0
			ORDER BY stream_pos LIMIT 1`, roomID).Scan(&before)
		if errors.Is(err, sql.ErrNoRows) {
			return []ClientEvent{}, nil
		}
		evPos, stateKey = 0, sql.NullString{}
	}
	if err != nil {
		return nil, fmt.Errorf("state at %d: %w", pos, err)
	}
	snap := before
	if stateKey.Valid {
		snap = evPos
	}
	ids, err := s.snapshotState(ctx, snap, nil)
	if err != nil {
		return nil, err
	}
	if members != nil {
		for k := range ids {
			if k[0] == spec.MRoomMember && !members[k[1]] {
				delete(ids, k)
			}
		}
	}
	return s.eventsByID(ctx, ids)
}

// StateAtFor is the room's state after position pos with only the given users'
// member events: what a lazy-loading client needs.
func (s *Service) StateAtFor(ctx context.Context, roomID string, pos int64, members map[string]bool) ([]ClientEvent, error) {
	return s.stateAtPositionFor(ctx, roomID, pos, members)
}

// ParseToken reads a room position token "sN". A sync token ("sN_M...") is accepted
// too: its first component is the event position.
func ParseToken(tok string) (int64, error) {
	first, _, _ := strings.Cut(tok, "_")
	n, err := strconv.ParseInt(strings.TrimPrefix(first, "s"), 10, 64)
	// Negative positions are history backfilled from other servers.
	if err != nil || !strings.HasPrefix(tok, "s") {
		return 0, mxerror.New(mxerror.InvalidParam, "invalid pagination token %q", tok)
	}
	return n, nil
}

// Token renders a position token: "after the event at pos".
func Token(pos int64) string { return "s" + strconv.FormatInt(pos, 10) }

// MembershipRow is one room the user has a membership in.
type MembershipRow struct {
	RoomID     string
	Membership string
	// StreamPos is the position of the membership event.
	StreamPos int64
}

// UserMemberships lists every room the user has a membership in, except rooms the
// user forgot.
func (s *Service) UserMemberships(ctx context.Context, userID string) ([]MembershipRow, error) {
	rows, err := s.db.Query(ctx, `SELECT c.room_id, c.membership, c.stream_pos FROM current_state c
		WHERE c.type = 'm.room.member' AND c.state_key = $1
		AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.user_id = $1 AND f.room_id = c.room_id)`, userID)
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []MembershipRow
	for rows.Next() {
		var m MembershipRow
		var membership sql.NullString
		if err := rows.Scan(&m.RoomID, &membership, &m.StreamPos); err != nil {
			return nil, err
		}
		m.Membership = membership.String
		out = append(out, m)
	}
	return out, rows.Err()
}

// HasEventsAfter reports whether the room has events after pos, up to upTo.
func (s *Service) HasEventsAfter(ctx context.Context, roomID string, pos, upTo int64) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 LIMIT 1`, roomID, pos, upTo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// LatestPosition is the position of the last committed event. Every event at or
// before it is committed, because positions are taken under one row lock.
func (s *Service) LatestPosition(ctx context.Context) (int64, error) {
	var pos int64
	err := s.db.StreamPos(ctx, "events", &pos)
	return pos, err
}

// StateAt is the room's state after the last event at or before pos.
func (s *Service) StateAt(ctx context.Context, roomID string, pos int64) ([]ClientEvent, error) {
	return s.stateAtPosition(ctx, roomID, pos)
}

// StrippedState is the state an invitee sees before joining.
func (s *Service) StrippedState(ctx context.Context, roomID, userID string) ([]map[string]any, error) {
	if remote, ok, err := s.remoteInviteState(ctx, roomID, userID); err != nil || ok {
		// Invited from another server into a room this one is not in: what that
		// server sent, and the invite itself.
		if err != nil {
			return nil, err
		}
		var ev string
		if err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomID, userID).Scan(&ev); err == nil {
			remote = append(remote, map[string]any{"type": spec.MRoomMember, "state_key": userID,
				"content": json.RawMessage(gjson.Get(ev, "content").Raw), "sender": gjson.Get(ev, "sender").String()})
		}
		return remote, nil
	}
	rows, err := s.queryEvents(ctx, `SELECT `+prefixed("e.", eventColumns)+` FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND (c.type IN ('m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.avatar',
		'm.room.canonical_alias', 'm.room.encryption', 'm.room.topic') OR (c.type = 'm.room.member' AND c.state_key = $2))`, roomID, userID)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(rows))
	for _, r := range rows {
		ev := r.clientEvent()
		out = append(out, map[string]any{"type": ev.Type, "state_key": *ev.StateKey, "content": ev.Content, "sender": ev.Sender})
	}
	return out, nil
}

// Summary is a room's summary for sync: heroes and member counts.
type Summary struct {
	Heroes       []string `json:"m.heroes,omitempty"`
	JoinedCount  int      `json:"m.joined_member_count"`
	InvitedCount int      `json:"m.invited_member_count"`
}

// RoomSummary computes the summary for userID: the member counts, and up to five
// other members as heroes when the room has no name or canonical alias.
func (s *Service) RoomSummary(ctx context.Context, roomID, userID string) (Summary, error) {
	rows, err := s.db.Query(ctx, `SELECT state_key, membership FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
		ORDER BY stream_pos`, roomID)
	if err != nil {
		return Summary{}, fmt.Errorf("room summary: %w", err)
	}
	defer rows.Close()
	var sum Summary
	for rows.Next() {
		var user string
		var m sql.NullString
		if err := rows.Scan(&user, &m); err != nil {
			return Summary{}, err
		}
		switch m.String {
		case "join":
			sum.JoinedCount++
		case "invite":
			sum.InvitedCount++
		default:
			continue
		}
		if user != userID && len(sum.Heroes) < 5 {
			sum.Heroes = append(sum.Heroes, user)
		}
	}
	if err := rows.Err(); err != nil {
		return Summary{}, err
	}
	rows.Close()
	named, err := s.hasNameOrAlias(ctx, roomID)
	if err != nil {
		return Summary{}, err
	}
	if named {
		sum.Heroes = nil
	}
	return sum, nil
}

// hasNameOrAlias reports whether the room has a non-empty name or canonical alias,
// by which clients name it; heroes are for rooms without either (the spec's room
// name calculation, as Synapse sends them).
func (s *Service) hasNameOrAlias(ctx context.Context, roomID string) (bool, error) {
	rows, err := s.db.Query(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.state_key = '' AND c.type IN ('m.room.name', 'm.room.canonical_alias')`, roomID)
	if err != nil {
		return false, fmt.Errorf("room name of %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return false, err
		}
		if gjson.Get(raw, "content.name").String() != "" || gjson.Get(raw, "content.alias").String() != "" {
			return true, nil
		}
	}
	return false, rows.Err()
}

// relTarget is the event a stored event relates to ("" if none).
func relTarget(r eventRow) string {
	return gjson.Get(r.json, "content.m\\.relates_to.event_id").String()
}

// relType is the relation type of a stored event ("" if none).
func relType(r eventRow) string {
	return gjson.Get(r.json, "content.m\\.relates_to.rel_type").String()
}

// SharedUsers lists the users joined to at least one room the user is joined to,
// the user included.
func (s *Service) SharedUsers(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT o.state_key FROM current_state me JOIN current_state o ON o.room_id = me.room_id
		WHERE me.type = 'm.room.member' AND me.state_key = $1 AND me.membership = 'join'
		AND o.type = 'm.room.member' AND o.membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("users sharing rooms with %s: %w", userID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// SharesRoomWithLocal reports whether a local user is joined to a room userID is
// joined to.
func (s *Service) SharesRoomWithLocal(ctx context.Context, userID string) (bool, error) {
	// The server name is escaped for LIKE: only its suffix position matters.
	pattern := "%:" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(s.cfg.ServerName)
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM current_state o JOIN current_state me ON me.room_id = o.room_id
		WHERE o.type = 'm.room.member' AND o.state_key = $1 AND o.membership = 'join'
		AND me.type = 'm.room.member' AND me.membership = 'join' AND me.state_key LIKE $2 ESCAPE '\' LIMIT 1`, userID, pattern).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rooms shared with %s: %w", userID, err)
	}
	return true, nil
}

// MayShareRoomWithLocal is SharesRoomWithLocal, counting also the rooms whose state
// here is partial: their members are not all known yet, so every server send_join
// named counts as in them (as ServersSharing counts them for what is sent out).
func (s *Service) MayShareRoomWithLocal(ctx context.Context, userID string) (bool, error) {
	if shares, err := s.SharesRoomWithLocal(ctx, userID); err != nil || shares {
		return shares, err
	}
	_, server, _ := strings.Cut(userID, ":")
	partial, err := s.PartialStateRooms(ctx)
	if err != nil {
		return false, err
	}
	for _, p := range partial {
		if slices.Contains(p.Servers, server) {
			return true, nil
		}
	}
	return false, nil
}

// fullStateWait bounds how long a member list waits for a partial-state room's
// remaining members (fetched in the background after a faster join).
const fullStateWait = 60 * time.Second

// awaitFullState waits while the room's state here is partial, for at most
// fullStateWait: the member list is what clients encrypt to, so it should be
// whole (Synapse waits the same way). Past the bound, the caller gets what there is.
func (s *Service) awaitFullState(ctx context.Context, roomID string) {
	s.AwaitFullState(ctx, roomID, fullStateWait)
}

// AwaitFullState waits up to limit while the room's state here is partial and
// reports whether it still is.
func (s *Service) AwaitFullState(ctx context.Context, roomID string, limit time.Duration) (partial bool, err error) {
	deadline := time.Now().Add(limit)
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		if partial, _, err = s.partialState(ctx, s.db, roomID); err != nil || !partial || !time.Now().Before(deadline) {
			return partial, err
		}
		select {
		case <-ctx.Done():
			return partial, ctx.Err()
		case <-time.After(min(delay, time.Until(deadline))):
		}
	}
}
