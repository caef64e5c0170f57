package clientsync

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
)

// Simplified sliding sync (MSC4186) is what Element X syncs with. The client asks
// for windows onto recency-sorted room lists and for room subscriptions; the server
// remembers, per connection, what it has sent of each room, so that each response
// carries only what the client has not seen. That memory lives here, in the
// process: a pos from another process (a restart, another node) is M_UNKNOWN_POS and
// the client starts the connection again, as the MSC intends.

// Limits on a request, so that one client cannot make the server build unbounded
// responses.
const (
	maxLists             = 100
	maxListNameBytes     = 64
	maxSlidingTimeline   = 100
	maxRequiredState     = 100
	defaultToDeviceLimit = 100
	// keptPositions is how many recent positions of a connection stay valid: the
	// latest, and older ones for a client retrying a request whose answer it lost.
	keptPositions = 3
	// connIdle is how long an unused connection's memory is kept.
	connIdle = 30 * time.Minute
)

// SlidingRequest is one sliding sync call.
type SlidingRequest struct {
	UserID, Localpart, DeviceID string
	// Pos is the pos of the previous response on this connection; empty starts one.
	Pos         string
	Timeout     time.Duration
	SetPresence string
	Body        SlidingBody
}

// SlidingBody is the JSON body of a sliding sync request.
type SlidingBody struct {
	ConnID string `json:"conn_id"`
	// TxnID is echoed back in the response.
	TxnID             string                `json:"txn_id,omitempty"`
	Lists             map[string]ListConfig `json:"lists"`
	RoomSubscriptions map[string]RoomConfig `json:"room_subscriptions"`
	Extensions        Extensions            `json:"extensions"`
}

// RoomConfig is what to send of each room: the state it needs and how many events.
type RoomConfig struct {
	RequiredState [][]string `json:"required_state"`
	TimelineLimit int        `json:"timeline_limit"`
}

// ListConfig is one sliding window onto the user's rooms sorted by recency.
type ListConfig struct {
	RoomConfig
	Ranges  [][]int      `json:"ranges"`
	Filters *ListFilters `json:"filters,omitempty"`
}

// ListFilters narrow a list's rooms. Unset fields do not filter.
type ListFilters struct {
	IsDM        *bool `json:"is_dm,omitempty"`
	IsInvite    *bool `json:"is_invite,omitempty"`
	IsEncrypted *bool `json:"is_encrypted,omitempty"`
	// RoomTypes and NotRoomTypes match the create event's type; a null entry stands
	// for rooms without one.
	RoomTypes    []*string `json:"room_types,omitempty"`
	NotRoomTypes []*string `json:"not_room_types,omitempty"`
	Tags         []string  `json:"tags,omitempty"`
	NotTags      []string  `json:"not_tags,omitempty"`
}

// Extensions are the optional streams of a sliding sync connection.
type Extensions struct {
	ToDevice    *ToDeviceExtension `json:"to_device,omitempty"`
	E2EE        *ExtensionScope    `json:"e2ee,omitempty"`
	AccountData *ExtensionScope    `json:"account_data,omitempty"`
	Receipts    *ExtensionScope    `json:"receipts,omitempty"`
	Typing      *ExtensionScope    `json:"typing,omitempty"`
}

// ExtensionScope enables an extension for some lists and subscriptions; nil Lists
// or Rooms mean all of them ("*" too).
type ExtensionScope struct {
	Enabled *bool    `json:"enabled,omitempty"`
	Lists   []string `json:"lists,omitempty"`
	Rooms   []string `json:"rooms,omitempty"`
}

// ToDeviceExtension delivers to-device messages with its own since token.
type ToDeviceExtension struct {
	Enabled *bool  `json:"enabled,omitempty"`
	Limit   int    `json:"limit,omitempty"`
	Since   string `json:"since,omitempty"`
}

func (e *ExtensionScope) on() bool    { return e != nil && e.Enabled != nil && *e.Enabled }
func (e *ToDeviceExtension) on() bool { return e != nil && e.Enabled != nil && *e.Enabled }

// SlidingResponse is the body of a sliding sync response.
type SlidingResponse struct {
	Pos        string                  `json:"pos"`
	TxnID      string                  `json:"txn_id,omitempty"`
	Lists      map[string]ListResult   `json:"lists"`
	Rooms      map[string]*SlidingRoom `json:"rooms"`
	Extensions map[string]any          `json:"extensions"`
}

// ListResult is a list's size and its window's rooms, in order.
type ListResult struct {
	Count int      `json:"count"`
	Ops   []ListOp `json:"ops,omitempty"`
}

// ListOp is a SYNC operation: the rooms of one range.
type ListOp struct {
	Op      string   `json:"op"`
	Range   []int    `json:"range"`
	RoomIDs []string `json:"room_ids"`
}

// SlidingRoom is what changed in one room since it was last sent on the connection,
// or all of it (up to the config) when Initial.
type SlidingRoom struct {
	Name              string              `json:"name,omitempty"`
	Avatar            string              `json:"avatar,omitempty"`
	Heroes            []Hero              `json:"heroes,omitempty"`
	IsDM              bool                `json:"is_dm,omitempty"`
	Initial           bool                `json:"initial,omitempty"`
	RequiredState     []rooms.ClientEvent `json:"required_state,omitempty"`
	Timeline          []rooms.ClientEvent `json:"timeline,omitempty"`
	InviteState       []map[string]any    `json:"invite_state,omitempty"`
	PrevBatch         string              `json:"prev_batch,omitempty"`
	Limited           bool                `json:"limited,omitempty"`
	NumLive           int                 `json:"num_live,omitempty"`
	BumpStamp         int64               `json:"bump_stamp,omitempty"`
	JoinedCount       *int                `json:"joined_count,omitempty"`
	InvitedCount      *int                `json:"invited_count,omitempty"`
	NotificationCount int                 `json:"notification_count"`
	HighlightCount    int                 `json:"highlight_count"`
}

// Hero is a member a client can name an unnamed room after.
type Hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// slidingConns remembers every open sliding sync connection of this process.
type slidingConns struct {
	nonce string // tells this process's positions from another's
	mu    sync.Mutex
	conns map[string]*slidingConn // by user, device and conn_id
	swept time.Time
}

// slidingConn is one connection: its sticky parameters and recent positions.
type slidingConn struct {
	mu        sync.Mutex
	lastUsed  time.Time
	next      int64
	positions map[int64]*connPos
	// Sticky parameters: a request that omits them keeps the previous ones.
	lists map[string]ListConfig
	subs  map[string]RoomConfig
	ext   Extensions
}

// connPos is what the client held after the response that returned one pos.
type connPos struct {
	token Token
	rooms map[string]roomSent
	lists map[string]ListResult
}

// roomSent is what the connection has sent of a room.
type roomSent struct {
	upTo       int64  // events position the client has the room up to
	config     string // the room config it was sent with
	membership string
	counts     push.Counts // the unread counts last sent
}

func newSlidingConns() *slidingConns {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &slidingConns{nonce: hex.EncodeToString(b), conns: map[string]*slidingConn{}}
}

// open returns the connection and the position the request continues from (nil
// for a new connection).
func (c *slidingConns) open(req SlidingRequest) (*slidingConn, *connPos, error) {
	key := req.UserID + "\x00" + req.DeviceID + "\x00" + req.Body.ConnID
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if now.Sub(c.swept) > time.Minute {
		for k, conn := range c.conns {
			conn.mu.Lock()
			idle := now.Sub(conn.lastUsed) > connIdle
			conn.mu.Unlock()
			if idle {
				delete(c.conns, k)
			}
		}
		c.swept = now
	}
	if req.Pos == "" {
		conn := &slidingConn{lastUsed: now, positions: map[int64]*connPos{}}
		c.conns[key] = conn
		return conn, nil, nil
	}
	unknown := mxerror.New(mxerror.UnknownPos, "unknown position %q: start a new connection", req.Pos)
	nonce, num, ok := strings.Cut(req.Pos, "_")
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || nonce != c.nonce {
		return nil, nil, unknown
	}
	conn := c.conns[key]
	if conn == nil {
		return nil, nil, unknown
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	pos := conn.positions[n]
	if pos == nil {
		return nil, nil, unknown
	}
	conn.lastUsed = now
	return conn, pos, nil
}

// params merges the request's parameters with the connection's sticky ones.
func (conn *slidingConn) params(body SlidingBody) (map[string]ListConfig, map[string]RoomConfig, Extensions) {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if body.Lists != nil {
		conn.lists = body.Lists
	}
	if body.RoomSubscriptions != nil {
		conn.subs = body.RoomSubscriptions
	}
	e := body.Extensions
	if e.ToDevice != nil {
		conn.ext.ToDevice = e.ToDevice
	}
	if e.E2EE != nil {
		conn.ext.E2EE = e.E2EE
	}
	if e.AccountData != nil {
		conn.ext.AccountData = e.AccountData
	}
	if e.Receipts != nil {
		conn.ext.Receipts = e.Receipts
	}
	if e.Typing != nil {
		conn.ext.Typing = e.Typing
	}
	return conn.lists, conn.subs, conn.ext
}

// commit stores a new position and forgets positions too old to be retried.
func (conn *slidingConn) commit(pos *connPos) int64 {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	conn.next++
	n := conn.next
	conn.positions[n] = pos
	delete(conn.positions, n-keptPositions)
	conn.lastUsed = time.Now()
	return n
}

// Validate checks a sliding sync body's shape and bounds.
func (b SlidingBody) Validate() error {
	if len(b.Lists) > maxLists {
		return mxerror.New(mxerror.InvalidParam, "at most %d lists", maxLists)
	}
	for name, l := range b.Lists {
		if len(name) > maxListNameBytes {
			return mxerror.New(mxerror.InvalidParam, "list name longer than %d bytes", maxListNameBytes)
		}
		for _, r := range l.Ranges {
			if len(r) != 2 || r[0] < 0 || r[1] < r[0] {
				return mxerror.New(mxerror.InvalidParam, "list %q: a range is [start, end] with 0 <= start <= end", name)
			}
		}
		if err := l.RoomConfig.validate(); err != nil {
			return err
		}
	}
	for roomID, rc := range b.RoomSubscriptions {
		if !strings.HasPrefix(roomID, "!") {
			return mxerror.New(mxerror.InvalidParam, "room subscription for %q: not a room ID", roomID)
		}
		if err := rc.validate(); err != nil {
			return err
		}
	}
	if td := b.Extensions.ToDevice; td != nil {
		if td.Limit < 0 {
			return mxerror.New(mxerror.InvalidParam, "to_device limit must not be negative")
		}
		if td.Since != "" {
			if n, err := strconv.ParseInt(td.Since, 10, 64); err != nil || n < 0 {
				return mxerror.New(mxerror.InvalidParam, "invalid to_device since %q", td.Since)
			}
		}
	}
	return nil
}

func (rc RoomConfig) validate() error {
	if rc.TimelineLimit < 0 {
		return mxerror.New(mxerror.InvalidParam, "timeline_limit must not be negative")
	}
	if len(rc.RequiredState) > maxRequiredState {
		return mxerror.New(mxerror.InvalidParam, "at most %d required_state entries", maxRequiredState)
	}
	for _, rs := range rc.RequiredState {
		if len(rs) != 2 {
			return mxerror.New(mxerror.InvalidParam, "a required_state entry is [event type, state key]")
		}
	}
	return nil
}

// SlidingSync answers a sliding sync request: at once for a new connection or when
// anything changed since pos, otherwise when something does or the timeout passes.
func (s *Service) SlidingSync(ctx context.Context, req SlidingRequest) (*SlidingResponse, error) {
	if err := req.Body.Validate(); err != nil {
		return nil, err
	}
	conn, prev, err := s.sliding.open(req)
	if err != nil {
		return nil, err
	}
	switch req.SetPresence {
	case "", presence.Online:
		err = s.presence.Touch(ctx, req.UserID, presence.Online)
	case presence.Unavailable:
		err = s.presence.Touch(ctx, req.UserID, presence.Unavailable)
	}
	if err != nil {
		return nil, err
	}
	lists, subs, ext := conn.params(req.Body)
	deadline := time.Now().Add(req.Timeout)
	for {
		wake := s.notifier.Wait()
		cur, err := s.current(ctx)
		if err != nil {
			return nil, err
		}
		resp, next, changed, err := s.buildSliding(ctx, req, prev, cur, lists, subs, ext)
		if err != nil {
			return nil, err
		}
		remaining := time.Until(deadline)
		if changed || prev == nil || remaining <= 0 {
			resp.Pos = s.sliding.nonce + "_" + strconv.FormatInt(conn.commit(next), 10)
			resp.TxnID = req.Body.TxnID
			return resp, nil
		}
		timer := time.NewTimer(remaining)
		select {
		case <-wake:
			timer.Stop()
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
}

// slidingRoom is a room the window selected, with its merged config.
type slidingRoom struct {
	membership rooms.MembershipRow
	config     RoomConfig
	inList     map[string]bool
	subscribed bool
}

func (s *Service) buildSliding(ctx context.Context, req SlidingRequest, prev *connPos, cur Token,
	lists map[string]ListConfig, subs map[string]RoomConfig, ext Extensions) (*SlidingResponse, *connPos, bool, error) {
	var since Token
	prevRooms := map[string]roomSent{}
	if prev != nil {
		since, prevRooms = prev.token, prev.rooms
	}
	resp := &SlidingResponse{Lists: map[string]ListResult{}, Rooms: map[string]*SlidingRoom{}, Extensions: map[string]any{}}
	next := &connPos{token: cur, rooms: make(map[string]roomSent, len(prevRooms)), lists: map[string]ListResult{}}

	memberships, err := s.rooms.UserMemberships(ctx, req.UserID)
	if err != nil {
		return nil, nil, false, err
	}
	// The rooms a list can show: those the user is in, invited to or knocking on,
	// and those left since the connection last sent them, so the client sees the
	// leave once.
	var candidates []rooms.MembershipRow
	byID := map[string]rooms.MembershipRow{}
	ignored, err := s.rooms.IgnoredBy(ctx, req.UserID)
	if err != nil {
		return nil, nil, false, err
	}
	for _, m := range memberships {
		switch m.Membership {
		case spec.Invite:
			if len(ignored) > 0 {
				// An ignored user's invite is not shown, as in /sync.
				stripped, err := s.rooms.StrippedState(ctx, m.RoomID, req.UserID)
				if err != nil {
					return nil, nil, false, err
				}
				if invitedBy(stripped, req.UserID, ignored) {
					continue
				}
			}
		case spec.Join, spec.Knock:
		default:
			sent, ok := prevRooms[m.RoomID]
			if !ok || sent.membership == spec.Leave || sent.membership == spec.Ban || sent.upTo >= m.StreamPos {
				continue
			}
		}
		candidates = append(candidates, m)
		byID[m.RoomID] = m
	}
	for roomID, sent := range prevRooms {
		if _, ok := byID[roomID]; ok {
			next.rooms[roomID] = sent
		}
	}

	bumps, err := s.bumpStamps(ctx, candidates, cur.Events)
	if err != nil {
		return nil, nil, false, err
	}
	slices.SortFunc(candidates, func(a, b rooms.MembershipRow) int {
		if c := cmp.Compare(bumps[b.RoomID], bumps[a.RoomID]); c != 0 {
			return c
		}
		return strings.Compare(a.RoomID, b.RoomID)
	})
	dms, err := s.directRooms(ctx, req.Localpart)
	if err != nil {
		return nil, nil, false, err
	}
	facts, tags, err := s.listFacts(ctx, req.Localpart, candidates, lists)
	if err != nil {
		return nil, nil, false, err
	}

	changed := false
	window := map[string]*slidingRoom{}
	add := func(m rooms.MembershipRow, rc RoomConfig) *slidingRoom {
		w := window[m.RoomID]
		if w == nil {
			w = &slidingRoom{membership: m, inList: map[string]bool{}}
			window[m.RoomID] = w
		}
		w.config = mergeConfig(w.config, rc)
		return w
	}
	for name, l := range lists {
		var matched []rooms.MembershipRow
		for _, m := range candidates {
			if l.Filters.match(m, dms[m.RoomID], facts[m.RoomID], tags[m.RoomID]) {
				matched = append(matched, m)
			}
		}
		res := ListResult{Count: len(matched)}
		for _, r := range l.Ranges {
			op := ListOp{Op: "SYNC", Range: []int{r[0], r[1]}, RoomIDs: []string{}}
			for i := r[0]; i <= r[1] && i < len(matched); i++ {
				add(matched[i], l.RoomConfig).inList[name] = true
				op.RoomIDs = append(op.RoomIDs, matched[i].RoomID)
			}
			res.Ops = append(res.Ops, op)
		}
		resp.Lists[name] = res
		next.lists[name] = res
		if p, ok := prevListResult(prev, name); !ok || !sameList(p, res) {
			changed = true
		}
	}
	for roomID, rc := range subs {
		if m, ok := byID[roomID]; ok {
			add(m, rc).subscribed = true
		}
	}

	for roomID, w := range window {
		room, sent, err := s.slidingRoom(ctx, req, w, prevRooms[roomID], since, prev != nil, cur, bumps[roomID])
		if err != nil {
			return nil, nil, false, err
		}
		next.rooms[roomID] = sent
		if room == nil {
			continue
		}
		room.IsDM = dms[roomID]
		resp.Rooms[roomID] = room
		changed = true
	}

	extChanged, err := s.slidingExtensions(ctx, req, ext, prev, since, cur, window, resp)
	if err != nil {
		return nil, nil, false, err
	}
	return resp, next, changed || extChanged, nil
}

func prevListResult(prev *connPos, name string) (ListResult, bool) {
	if prev == nil {
		return ListResult{}, false
	}
	r, ok := prev.lists[name]
	return r, ok
}

func sameList(a, b ListResult) bool {
	return a.Count == b.Count && slices.EqualFunc(a.Ops, b.Ops, func(x, y ListOp) bool {
		return slices.Equal(x.Range, y.Range) && slices.Equal(x.RoomIDs, y.RoomIDs)
	})
}

// bumpStamps gives every candidate its recency: the latest bump event for rooms
// the user is in, the membership event for the others (an invite is as recent as
// its invite).
func (s *Service) bumpStamps(ctx context.Context, candidates []rooms.MembershipRow, upTo int64) (map[string]int64, error) {
	var joined []string
	for _, m := range candidates {
		if m.Membership == spec.Join {
			joined = append(joined, m.RoomID)
		}
	}
	bumps, err := s.rooms.BumpStamps(ctx, joined, upTo)
	if err != nil {
		return nil, err
	}
	for _, m := range candidates {
		if m.Membership != spec.Join || bumps[m.RoomID] == 0 {
			bumps[m.RoomID] = m.StreamPos
		}
	}
	return bumps, nil
}

// directRooms reads m.direct: the rooms the user marked as direct chats.
func (s *Service) directRooms(ctx context.Context, localpart string) (map[string]bool, error) {
	out := map[string]bool{}
	raw, err := s.users.AccountData(ctx, localpart, "", "m.direct")
	if err != nil || raw == nil {
		return out, nil // no m.direct yet
	}
	var direct map[string][]string
	if json.Unmarshal(raw, &direct) != nil {
		return out, nil // the client wrote something else; no room is direct
	}
	for _, ids := range direct {
		for _, id := range ids {
			out[id] = true
		}
	}
	return out, nil
}

// listFacts reads room facts and tags, but only when some list filters by them:
// they cost a query per room.
func (s *Service) listFacts(ctx context.Context, localpart string, candidates []rooms.MembershipRow, lists map[string]ListConfig) (map[string]rooms.Facts, map[string]map[string]json.RawMessage, error) {
	needFacts, needTags := false, false
	for _, l := range lists {
		if f := l.Filters; f != nil {
			needFacts = needFacts || f.IsEncrypted != nil || f.RoomTypes != nil || f.NotRoomTypes != nil
			needTags = needTags || f.Tags != nil || f.NotTags != nil
		}
	}
	ids := make([]string, len(candidates))
	for i, m := range candidates {
		ids[i] = m.RoomID
	}
	facts := map[string]rooms.Facts{}
	var err error
	if needFacts {
		if facts, err = s.rooms.RoomFacts(ctx, ids); err != nil {
			return nil, nil, err
		}
	}
	tags := map[string]map[string]json.RawMessage{}
	if needTags {
		for _, id := range ids {
			if tags[id], err = s.users.RoomTags(ctx, localpart, id); err != nil {
				return nil, nil, err
			}
		}
	}
	return facts, tags, nil
}

func (f *ListFilters) match(m rooms.MembershipRow, dm bool, facts rooms.Facts, tags map[string]json.RawMessage) bool {
	if f == nil {
		return true
	}
	if f.IsDM != nil && *f.IsDM != dm {
		return false
	}
	if f.IsInvite != nil && *f.IsInvite != (m.Membership == spec.Invite) {
		return false
	}
	if f.IsEncrypted != nil && *f.IsEncrypted != facts.Encrypted {
		return false
	}
	typeIn := func(types []*string) bool {
		return slices.ContainsFunc(types, func(t *string) bool {
			return t == nil && facts.Type == "" || t != nil && *t == facts.Type
		})
	}
	if f.RoomTypes != nil && !typeIn(f.RoomTypes) || typeIn(f.NotRoomTypes) {
		return false
	}
	if f.Tags != nil && !slices.ContainsFunc(f.Tags, func(t string) bool { _, ok := tags[t]; return ok }) {
		return false
	}
	return !slices.ContainsFunc(f.NotTags, func(t string) bool { _, ok := tags[t]; return ok })
}

// mergeConfig combines the configs of a room that several lists or subscriptions
// select: the union of the required state and the longest timeline.
func mergeConfig(a, b RoomConfig) RoomConfig {
	out := RoomConfig{TimelineLimit: max(a.TimelineLimit, b.TimelineLimit)}
	seen := map[[2]string]bool{}
	for _, rs := range slices.Concat(a.RequiredState, b.RequiredState) {
		k := [2]string{rs[0], rs[1]}
		if !seen[k] {
			seen[k] = true
			out.RequiredState = append(out.RequiredState, rs)
		}
	}
	return out
}

// key is a canonical form of the config: a room sent with another config is sent
// again in full.
func (rc RoomConfig) key() string {
	parts := make([]string, 0, len(rc.RequiredState)+1)
	for _, rs := range rc.RequiredState {
		parts = append(parts, rs[0]+"\x00"+rs[1])
	}
	slices.Sort(parts)
	return strconv.Itoa(rc.TimelineLimit) + "\x01" + strings.Join(parts, "\x01")
}

// slidingRoom builds a room's entry: nil when the client is up to date with it.
func (s *Service) slidingRoom(ctx context.Context, req SlidingRequest, w *slidingRoom, sent roomSent, since Token, incremental bool, cur Token, bump int64) (*SlidingRoom, roomSent, error) {
	m := w.membership
	key := w.config.key()
	// A room is sent whole when the connection has not sent it, when its config
	// changed, and when an invite or knock turned into something else: what the
	// client had was stripped state, not the room.
	initial := sent.upTo == 0 || sent.config != key ||
		(sent.membership == spec.Invite || sent.membership == spec.Knock) && sent.membership != m.Membership
	upTo := cur.Events
	if m.Membership != spec.Join {
		upTo = m.StreamPos // nothing after an invite, knock or leave is visible
	}
	now := roomSent{upTo: upTo, config: key, membership: m.Membership}

	if m.Membership == spec.Invite || m.Membership == spec.Knock {
		if !initial && sent.upTo >= m.StreamPos {
			return nil, now, nil
		}
		stripped, err := s.rooms.StrippedState(ctx, m.RoomID, req.UserID)
		if err != nil {
			return nil, now, err
		}
		room := &SlidingRoom{Initial: true, InviteState: stripped, BumpStamp: bump}
		for _, ev := range stripped {
			content, _ := ev["content"].(json.RawMessage)
			switch ev["type"] {
			case "m.room.name":
				room.Name = jsonString(content, "name")
			case "m.room.avatar":
				room.Avatar = jsonString(content, "url")
			}
		}
		return room, now, nil
	}

	if !initial {
		has, err := s.rooms.HasEventsAfter(ctx, m.RoomID, sent.upTo, upTo)
		if err != nil {
			return nil, now, err
		}
		if !has {
			// No new events, but a notification or a receipt may have changed
			// the counts: then the room comes with them alone.
			now.counts = sent.counts
			if since.Notifications >= cur.Notifications && since.Receipts >= cur.Receipts {
				return nil, now, nil
			}
			counts, err := s.unreadCounts(ctx, req.UserID, m.RoomID)
			if err != nil || counts == sent.counts {
				return nil, now, err
			}
			now.counts = counts
			return &SlidingRoom{NotificationCount: counts.Notifications, HighlightCount: counts.Highlights, BumpStamp: bump}, now, nil
		}
	}
	counts, err := s.unreadCounts(ctx, req.UserID, m.RoomID)
	if err != nil {
		return nil, now, err
	}
	now.counts = counts

	limit := min(w.config.TimelineLimit, maxSlidingTimeline)
	syncReq := Request{UserID: req.UserID, DeviceID: req.DeviceID}
	var from *Token
	if !initial {
		from = &Token{Events: sent.upTo}
	}
	tl, err := s.timeline(ctx, syncReq, m.RoomID, from, upTo, &filter.RoomFilter{Timeline: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Limit: &limit}}})
	if err != nil {
		return nil, now, err
	}
	room := &SlidingRoom{Initial: initial, Timeline: tl.Events, Limited: tl.Limited, PrevBatch: tl.PrevBatch, BumpStamp: bump,
		NotificationCount: counts.Notifications, HighlightCount: counts.Highlights}
	if incremental {
		for _, ev := range tl.Events {
			if ev.StreamPos > since.Events {
				room.NumLive++
			}
		}
	}

	summary, err := s.rooms.RoomSummary(ctx, m.RoomID, req.UserID)
	if err != nil {
		return nil, now, err
	}
	room.JoinedCount, room.InvitedCount = &summary.JoinedCount, &summary.InvitedCount

	// Load the non-member state and the member events anyone asked for: the
	// required ones, the timeline's senders for $LAZY, and the heroes.
	rs := requiredState{entries: w.config.RequiredState, userID: req.UserID, senders: map[string]bool{}}
	for _, ev := range tl.Events {
		rs.senders[ev.Sender] = true
	}
	members := rs.members()
	if members != nil {
		for _, h := range summary.Heroes {
			members[h] = true
		}
	}
	state, err := s.rooms.StateAtFor(ctx, m.RoomID, upTo, members)
	if err != nil {
		return nil, now, err
	}
	memberEvents := map[string]rooms.ClientEvent{}
	for _, ev := range state {
		switch ev.Type {
		case "m.room.name":
			room.Name = jsonString(ev.Content, "name")
		case "m.room.avatar":
			room.Avatar = jsonString(ev.Content, "url")
		case spec.MRoomMember:
			memberEvents[*ev.StateKey] = ev
		}
		if !rs.wants(ev) {
			continue
		}
		// An incremental entry carries the state that changed since the room was
		// last sent, and the members the new timeline needs.
		lazyMember := ev.Type == spec.MRoomMember && rs.lazy() && rs.senders[*ev.StateKey]
		if initial || ev.StreamPos > sent.upTo || lazyMember {
			room.RequiredState = append(room.RequiredState, ev)
		}
	}
	if room.Name == "" {
		for _, h := range summary.Heroes {
			hero := Hero{UserID: h}
			if ev, ok := memberEvents[h]; ok {
				hero.DisplayName = jsonString(ev.Content, "displayname")
				hero.AvatarURL = jsonString(ev.Content, "avatar_url")
			}
			room.Heroes = append(room.Heroes, hero)
		}
	}
	return room, now, nil
}

// requiredState matches state events against a room config's required_state.
type requiredState struct {
	entries [][]string
	userID  string
	senders map[string]bool
}

// members is the set of users whose member events are needed, or nil for all.
func (rs requiredState) members() map[string]bool {
	out := map[string]bool{}
	for _, e := range rs.entries {
		if e[0] != spec.MRoomMember && e[0] != "*" {
			continue
		}
		switch e[1] {
		case "*":
			return nil
		case "$ME":
			out[rs.userID] = true
		case "$LAZY":
			for u := range rs.senders {
				out[u] = true
			}
			out[rs.userID] = true
		default:
			out[e[1]] = true
		}
	}
	return out
}

func (rs requiredState) lazy() bool {
	return slices.ContainsFunc(rs.entries, func(e []string) bool { return e[0] == spec.MRoomMember && e[1] == "$LAZY" })
}

func (rs requiredState) wants(ev rooms.ClientEvent) bool {
	if ev.StateKey == nil {
		return false
	}
	for _, e := range rs.entries {
		if e[0] != "*" && e[0] != ev.Type {
			continue
		}
		switch e[1] {
		case "*", *ev.StateKey:
			return true
		case "$ME":
			if *ev.StateKey == rs.userID {
				return true
			}
		case "$LAZY":
			if ev.Type == spec.MRoomMember && (rs.senders[*ev.StateKey] || *ev.StateKey == rs.userID) {
				return true
			}
		}
	}
	return false
}

func jsonString(content json.RawMessage, field string) string {
	var m map[string]any
	if json.Unmarshal(content, &m) != nil {
		return ""
	}
	s, _ := m[field].(string)
	return s
}

// extensionRooms is the rooms an extension covers: those of the lists and
// subscriptions its scope names.
func extensionRooms(scope *ExtensionScope, window map[string]*slidingRoom) []string {
	var out []string
	for roomID, w := range window {
		inList := false
		if len(w.inList) > 0 {
			inList = scope.Lists == nil || slices.Contains(scope.Lists, "*")
			for name := range w.inList {
				inList = inList || slices.Contains(scope.Lists, name)
			}
		}
		subscribed := w.subscribed && (scope.Rooms == nil || slices.Contains(scope.Rooms, "*") || slices.Contains(scope.Rooms, roomID))
		if inList || subscribed {
			out = append(out, roomID)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Service) slidingExtensions(ctx context.Context, req SlidingRequest, ext Extensions, prev *connPos, since, cur Token,
	window map[string]*slidingRoom, resp *SlidingResponse) (bool, error) {
	changed := false
	if ext.ToDevice.on() {
		acked := since.ToDevice
		if ext.ToDevice.Since != "" {
			acked, _ = strconv.ParseInt(ext.ToDevice.Since, 10, 64) // validated
			acked = min(acked, cur.ToDevice)
		}
		limit := ext.ToDevice.Limit
		if limit == 0 {
			limit = defaultToDeviceLimit
		}
		msgs, last, err := s.e2ee.TakeToDevice(ctx, req.UserID, req.DeviceID, acked, cur.ToDevice, limit)
		if err != nil {
			return false, err
		}
		resp.Extensions["to_device"] = map[string]any{"next_batch": strconv.FormatInt(last, 10), "events": msgs}
		changed = changed || len(msgs) > 0
	}
	if ext.E2EE.on() {
		e := map[string]any{}
		counts, err := s.e2ee.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID)
		if err != nil {
			return false, err
		}
		fallback, err := s.e2ee.UnusedFallbackKeyTypes(ctx, req.UserID, req.DeviceID)
		if err != nil {
			return false, err
		}
		e["device_one_time_keys_count"] = counts
		e["device_unused_fallback_key_types"] = fallback
		if prev != nil {
			changedUsers, left, err := s.deviceListChanges(ctx, req.UserID, since, cur)
			if err != nil {
				return false, err
			}
			if len(changedUsers) > 0 || len(left) > 0 {
				e["device_lists"] = DeviceLists{Changed: changedUsers, Left: left}
				changed = true
			}
		}
		resp.Extensions["e2ee"] = e
	}
	if ext.AccountData.on() {
		data, err := s.slidingAccountData(ctx, req, since, cur, extensionRooms(ext.AccountData, window), resp)
		if err != nil {
			return false, err
		}
		resp.Extensions["account_data"] = data
		changed = changed || len(data.Global) > 0 || len(data.Rooms) > 0
	}
	if ext.Receipts.on() {
		out := map[string]any{}
		byRoom := map[string][]receipts.Receipt{}
		var initialRooms, liveRooms []string
		for _, roomID := range extensionRooms(ext.Receipts, window) {
			if r := resp.Rooms[roomID]; r != nil && r.Initial {
				initialRooms = append(initialRooms, roomID)
			} else {
				liveRooms = append(liveRooms, roomID)
			}
		}
		// A room sent whole gets all its receipts; the others what changed.
		for _, part := range []struct {
			ids   []string
			since int64
		}{{initialRooms, 0}, {liveRooms, since.Receipts}} {
			got, err := s.receipts.Since(ctx, part.ids, req.UserID, part.since, cur.Receipts)
			if err != nil {
				return false, err
			}
			for id, rs := range got {
				byRoom[id] = rs
			}
		}
		for roomID, rs := range byRoom {
			out[roomID] = receipts.Event(rs)
		}
		resp.Extensions["receipts"] = map[string]any{"rooms": out}
		changed = changed || len(out) > 0
	}
	if ext.Typing.on() {
		typingSince := since.Typing
		if prev == nil {
			typingSince = -1
		}
		out := map[string]any{}
		for roomID, users := range s.typing.Changed(extensionRooms(ext.Typing, window), typingSince) {
			if prev == nil && len(users) == 0 {
				continue
			}
			out[roomID] = map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}}
		}
		resp.Extensions["typing"] = map[string]any{"rooms": out}
		changed = changed || len(out) > 0
	}
	return changed, nil
}

// AccountDataExtension is the account_data extension's answer.
type AccountDataExtension struct {
	Global []any            `json:"global"`
	Rooms  map[string][]any `json:"rooms"`
}

func (s *Service) slidingAccountData(ctx context.Context, req SlidingRequest, since, cur Token, roomIDs []string, resp *SlidingResponse) (AccountDataExtension, error) {
	out := AccountDataExtension{Global: []any{}, Rooms: map[string][]any{}}
	wanted := map[string]bool{}
	for _, id := range roomIDs {
		wanted[id] = true
	}
	items, err := s.users.AccountDataSince(ctx, req.Localpart, since.AccountData, cur.AccountData)
	if err != nil {
		return out, err
	}
	initial := func(roomID string) bool { return resp.Rooms[roomID] != nil && resp.Rooms[roomID].Initial }
	for _, it := range items {
		ev := map[string]any{"type": it.Type, "content": it.Content}
		switch {
		case it.RoomID == "":
			out.Global = append(out.Global, ev)
		case wanted[it.RoomID] && (since.AccountData == 0 || !initial(it.RoomID)):
			out.Rooms[it.RoomID] = append(out.Rooms[it.RoomID], ev)
		}
	}
	if since.AccountData == 0 || !slices.ContainsFunc(roomIDs, initial) {
		return out, nil
	}
	// A room sent whole gets all its account data, however old.
	all, err := s.users.AccountDataSince(ctx, req.Localpart, 0, cur.AccountData)
	if err != nil {
		return out, err
	}
	for _, it := range all {
		if it.RoomID != "" && wanted[it.RoomID] && initial(it.RoomID) {
			out.Rooms[it.RoomID] = append(out.Rooms[it.RoomID], map[string]any{"type": it.Type, "content": it.Content})
		}
	}
	return out, nil
}
