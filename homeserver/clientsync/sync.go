package clientsync

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/errgroup"

	"github.com/hongyan/hongyan/homeserver/e2ee"
	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/typing"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Service builds sync responses from the rooms, users, receipts and typing services.
type Service struct {
	db       *storage.DB
	rooms    *rooms.Service
	users    *users.Service
	receipts *receipts.Service
	typing   *typing.Service
	presence *presence.Service
	e2ee     *e2ee.Service
	notifier *Notifier
	sliding  *slidingConns
	push     *push.Service
	// lazy is what lazy-loading syncs sent each device (lazymembers.go).
	lazy *lazyMembers
}

// Deps are the services sync reads.
type Deps struct {
	// DB is read for the stream positions only; each service owns its tables.
	DB       *storage.DB
	Rooms    *rooms.Service
	Users    *users.Service
	Receipts *receipts.Service
	Typing   *typing.Service
	Presence *presence.Service
	E2EE     *e2ee.Service
	Notifier *Notifier
	// Push gives the unread counts; nil sends them as zero.
	Push *push.Service
}

// New returns the sync service.
func New(d Deps) *Service {
	return &Service{db: d.DB, rooms: d.Rooms, users: d.Users, receipts: d.Receipts, typing: d.Typing, presence: d.Presence, e2ee: d.E2EE, notifier: d.Notifier, sliding: newSlidingConns(), push: d.Push, lazy: newLazyMembers()}
}

// Request is one /sync call.
type Request struct {
	UserID, Localpart, DeviceID string
	// Since is nil for an initial sync.
	Since     *Token
	Filter    filter.Filter
	FullState bool
	Timeout   time.Duration
	// SetPresence is the set_presence parameter: "" and "online" mark the user
	// online, "unavailable" sets that, "offline" leaves presence alone.
	SetPresence string
}

// Response is the /sync body.
type Response struct {
	NextBatch   string       `json:"next_batch"`
	AccountData EventList    `json:"account_data"`
	Presence    EventList    `json:"presence"`
	ToDevice    EventList    `json:"to_device"`
	Rooms       RoomsSection `json:"rooms"`
	DeviceLists DeviceLists  `json:"device_lists"`
	// DeviceOneTimeKeysCount is the syncing device's unclaimed one-time keys.
	DeviceOneTimeKeysCount map[string]int `json:"device_one_time_keys_count"`
	// DeviceUnusedFallbackKeyTypes lists the algorithms with an unused fallback key.
	DeviceUnusedFallbackKeyTypes []string `json:"device_unused_fallback_key_types"`
}

// EventList is {"events": [...]}.
type EventList struct {
	Events []any `json:"events"`
}

// DeviceLists is the device list changes section.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// RoomsSection groups rooms by the user's membership.
type RoomsSection struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Leave  map[string]*LeftRoom    `json:"leave"`
	Knock  map[string]any          `json:"knock"`
	// Peek holds the rooms the device peeks into (MSC2753), shaped as joined ones.
	Peek map[string]*JoinedRoom `json:"peek,omitempty"`
}

// JoinedRoom is a room the user is in.
type JoinedRoom struct {
	// Summary is sent when it may have changed; clients keep the last one.
	Summary             *rooms.Summary `json:"summary,omitempty"`
	State               ClientEvents   `json:"state"`
	Timeline            Timeline       `json:"timeline"`
	Ephemeral           EventList      `json:"ephemeral"`
	AccountData         EventList      `json:"account_data"`
	UnreadNotifications map[string]int `json:"unread_notifications"`
	// UnreadThreadNotifications are the counts per thread, for a filter that
	// asked for unread_thread_notifications.
	UnreadThreadNotifications map[string]push.Counts `json:"unread_thread_notifications,omitempty"`
}

// InvitedRoom is a room the user is invited to.
type InvitedRoom struct {
	InviteState struct {
		Events []map[string]any `json:"events"`
	} `json:"invite_state"`
}

// LeftRoom is a room the user left or was removed from since the last sync.
type LeftRoom struct {
	State       ClientEvents `json:"state"`
	Timeline    Timeline     `json:"timeline"`
	AccountData EventList    `json:"account_data"`
}

// ClientEvents is {"events": [...]} of room events.
type ClientEvents struct {
	Events []rooms.ClientEvent `json:"events"`
}

// Timeline is a room's new events.
type Timeline struct {
	Events    []rooms.ClientEvent `json:"events"`
	Limited   bool                `json:"limited"`
	PrevBatch string              `json:"prev_batch,omitempty"`
}

const defaultTimelineLimit = 10

// Sync answers a /sync: at once if anything changed since the token (or for an
// initial sync), otherwise when something does or the timeout passes.
func (s *Service) Sync(ctx context.Context, req Request) (*Response, error) {
	switch req.SetPresence {
	case "", presence.Online:
		if err := s.presence.Touch(ctx, req.UserID, presence.Online); err != nil {
			return nil, err
		}
	case presence.Unavailable:
		if err := s.presence.Touch(ctx, req.UserID, presence.Unavailable); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(req.Timeout)
	first := true
	for {
		// Taken before reading, so a commit during the read still wakes us.
		wake := s.notifier.Wait()
		cur, err := s.current(ctx)
		if err != nil {
			return nil, err
		}
		if req.Since == nil {
			s.awaitInitialCounts(ctx, &cur)
		}
		resp, changed, err := s.build(ctx, req, cur, first)
		if err != nil {
			return nil, err
		}
		first = false
		remaining := time.Until(deadline)
		if changed || req.Since == nil || req.FullState || remaining <= 0 {
			return resp, s.addKeyCounts(ctx, req, resp)
		}
		timer := time.NewTimer(remaining)
		select {
		case <-wake:
			timer.Stop()
		case <-timer.C:
			return resp, nil
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
}

// current is every stream's latest committed position. The positions are the
// streams rows each service advances in its write transactions (rooms "events",
// users "account_data", and so on), read here in one query because a long-poll
// rereads them on every wake-up.
func (s *Service) current(ctx context.Context) (Token, error) {
	pos, err := s.db.StreamPositions(ctx)
	if err != nil {
		return Token{}, err
	}
	s.awaitCounts(ctx, pos)
	return Token{
		Events:        pos["events"],
		AccountData:   pos["account_data"],
		Receipts:      pos["receipts"],
		Typing:        s.typing.Position(),
		Presence:      pos["presence"],
		ToDevice:      pos["to_device"],
		DeviceLists:   pos["device_lists"],
		Notifications: pos["push_notifications"],
	}, nil
}

// build assembles the response from since to cur and reports whether it holds
// anything. first is false when a long-poll rebuilds after a wake-up.
func (s *Service) build(ctx context.Context, req Request, cur Token, first bool) (*Response, bool, error) {
	since := clampSince(req.Since, cur)
	resp := newResponse(cur)
	roomData, err := s.addAccountData(ctx, req, since, cur, resp)
	if err != nil {
		return nil, false, err
	}
	// addE2EE may lower cur.ToDevice (a capped batch of to-device messages); every
	// later step reads the lowered token, as next_batch does.
	if err := s.addE2EE(ctx, req, since, &cur, first, resp); err != nil {
		return nil, false, err
	}
	if err := s.addPresence(ctx, req, since, cur, resp); err != nil {
		return nil, false, err
	}
	roomFilter := req.Filter.Room
	if roomFilter == nil {
		roomFilter = &filter.RoomFilter{}
	}
	plan, err := s.planRooms(ctx, req, since, cur, roomFilter, roomData)
	if err != nil {
		return nil, false, err
	}
	if err := s.addInvites(ctx, req, plan, resp); err != nil {
		return nil, false, err
	}
	if err := s.addLeaves(ctx, req, plan.leaves, since, roomFilter, resp); err != nil {
		return nil, false, err
	}
	if req.Since == nil && roomFilter.State != nil && roomFilter.State.LazyLoadMembers {
		s.lazy.reset(req.UserID, req.DeviceID)
	}
	if err := s.addJoinedRooms(ctx, req, plan.joins, since, cur, roomFilter, roomData, resp); err != nil {
		return nil, false, err
	}
	if err := s.addEphemeral(ctx, req, plan.joined, since, cur, roomFilter, resp); err != nil {
		return nil, false, err
	}
	if err := s.addUnread(ctx, req, plan.joined, since, cur, roomFilter, resp); err != nil {
		return nil, false, err
	}
	if err := s.addPeeks(ctx, req, plan.changes, since, cur, roomFilter, resp); err != nil {
		return nil, false, err
	}
	return resp, resp.hasContent(), nil
}

// clampSince is the client's token with every position no later than cur. A token
// from the future (another server's, or forged) is clamped rather than trusted: the
// client gets everything up to now. An initial sync starts from the zero token.
func clampSince(tok *Token, cur Token) Token {
	if tok == nil {
		return Token{}
	}
	since := *tok
	since.Events = min(since.Events, cur.Events)
	since.AccountData = min(since.AccountData, cur.AccountData)
	since.Receipts = min(since.Receipts, cur.Receipts)
	since.Presence = min(since.Presence, cur.Presence)
	since.ToDevice = min(since.ToDevice, cur.ToDevice)
	since.DeviceLists = min(since.DeviceLists, cur.DeviceLists)
	since.Notifications = min(since.Notifications, cur.Notifications)
	if since.Typing > cur.Typing {
		since.Typing = 0 // typing positions are per node; a foreign one resets
	}
	return since
}

// newResponse is an empty response up to cur, every section present: clients
// expect the keys even when there is nothing in them.
func newResponse(cur Token) *Response {
	return &Response{
		NextBatch:              cur.String(),
		AccountData:            EventList{Events: []any{}},
		Presence:               EventList{Events: []any{}},
		ToDevice:               EventList{Events: []any{}},
		DeviceOneTimeKeysCount: map[string]int{},
		Rooms: RoomsSection{Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
			Leave: map[string]*LeftRoom{}, Knock: map[string]any{}},
	}
}

// hasContent reports whether the response carries anything for the client, which
// ends a long-poll. The key counts every response carries do not count.
func (r *Response) hasContent() bool {
	return len(r.AccountData.Events) > 0 || len(r.Presence.Events) > 0 || len(r.ToDevice.Events) > 0 ||
		len(r.DeviceLists.Changed) > 0 || len(r.DeviceLists.Left) > 0 ||
		len(r.Rooms.Join) > 0 || len(r.Rooms.Invite) > 0 || len(r.Rooms.Leave) > 0 || len(r.Rooms.Knock) > 0 ||
		len(r.Rooms.Peek) > 0
}

// addAccountData adds the global account data the filter allows and returns the
// per-room account data by room, for the joined rooms to carry.
func (s *Service) addAccountData(ctx context.Context, req Request, since, cur Token, resp *Response) (map[string][]any, error) {
	roomData := map[string][]any{}
	if since.AccountData >= cur.AccountData {
		return roomData, nil
	}
	items, err := s.users.AccountDataSince(ctx, req.Localpart, since.AccountData, cur.AccountData)
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		ev := map[string]any{"type": it.Type, "content": it.Content}
		if it.RoomID == "" {
			if eventAllowed(req.Filter.AccountData, it.Type) {
				resp.AccountData.Events = append(resp.AccountData.Events, ev)
			}
		} else {
			roomData[it.RoomID] = append(roomData[it.RoomID], ev)
		}
	}
	return roomData, nil
}

// addPresence adds the presence changes of users sharing a room with the user, and
// the presence of users who came to share a room with the user since the token
// (changed or not: the client has never seen it), as the presence filter allows.
func (s *Service) addPresence(ctx context.Context, req Request, since, cur Token, resp *Response) error {
	if !eventAllowed(req.Filter.Presence, "m.presence") {
		return nil
	}
	var changes []presence.Status
	if since.Presence < cur.Presence {
		var err error
		if changes, err = s.presence.ChangedForUser(ctx, req.UserID, since.Presence, cur.Presence); err != nil {
			return err
		}
	}
	if req.Since != nil && since.Events < cur.Events {
		newly, err := s.newlyShared(ctx, req.UserID, since, cur)
		if err != nil {
			return err
		}
		for _, u := range newly {
			if slices.ContainsFunc(changes, func(st presence.Status) bool { return st.UserID == u }) {
				continue
			}
			st, ok, err := s.presence.Known(ctx, u)
			if err != nil {
				return err
			}
			if ok {
				changes = append(changes, st)
			}
		}
	}
	for _, st := range changes {
		if f := req.Filter.Presence; f != nil && (f.Senders != nil && !slices.Contains(*f.Senders, st.UserID) || slices.Contains(f.NotSenders, st.UserID)) {
			continue
		}
		resp.Presence.Events = append(resp.Presence.Events, map[string]any{"type": "m.presence", "sender": st.UserID, "content": st})
	}
	return nil
}

// joinWork is a joined room to build for the response.
type joinWork struct {
	roomID string
	// fresh: the room is new to the client (initial sync, joined since, or
	// its partial state completed since): its timeline starts afresh.
	// fullState: its whole state is sent, also when asked for (full_state);
	// the timeline still starts at since.
	fresh, fullState bool
}

// roomPlan is which rooms a response covers, by membership.
type roomPlan struct {
	// joined is every joined room the filter allows, for typing and receipts.
	joined []string
	// joins are the joined rooms with something to send.
	joins []joinWork
	// invites and knocks are the rooms invited to or knocked on since the token.
	invites, knocks []string
	// leaves are the rooms left or banned from since the token.
	leaves []rooms.MembershipRow
	// changes are the rooms with events since the token (nil for an initial sync).
	changes map[string]rooms.RoomChange
}

// planRooms sorts the user's rooms by what the response sends for each. An
// incremental sync reads which rooms had events once, not room by room: most
// wake-ups concern one room of many.
func (s *Service) planRooms(ctx context.Context, req Request, since, cur Token, roomFilter *filter.RoomFilter, roomData map[string][]any) (roomPlan, error) {
	var plan roomPlan
	memberships, err := s.rooms.UserMemberships(ctx, req.UserID)
	if err != nil {
		return plan, err
	}
	var changes map[string]rooms.RoomChange
	if req.Since != nil {
		if changes, err = s.rooms.RoomsChangedBetween(ctx, since.Events, cur.Events); err != nil {
			return plan, err
		}
	}
	plan.changes = changes
	// As with Synapse, a room joined with partial state is left out for clients
	// that do not lazy-load members (they would take the partial member list for
	// the room's) and comes, once completed, as newly joined with its whole state.
	lazy := roomFilter.State != nil && roomFilter.State.LazyLoadMembers
	var partial map[string]bool
	if !lazy {
		if partial, err = s.rooms.PartialStateRoomIDs(ctx); err != nil {
			return plan, err
		}
	}
	for _, m := range memberships {
		if !roomAllowed(roomFilter, m.RoomID) {
			continue
		}
		if m.Membership == "join" && partial[m.RoomID] {
			continue
		}
		if m.Membership == "join" {
			plan.joined = append(plan.joined, m.RoomID)
		}
		newMembership := req.Since == nil || (m.StreamPos > since.Events && m.StreamPos <= cur.Events)
		switch m.Membership {
		case "join":
			if newMembership && req.Since != nil {
				// The user's member event changed since the token: a join, or
				// only a new displayname or avatar of a user joined all along,
				// which is a state change like any other, not a new room.
				if newMembership, err = s.joinedSince(ctx, m.RoomID, req.UserID, since.Events); err != nil {
					return plan, err
				}
			}
			fresh := req.Since == nil || newMembership || (changes[m.RoomID].StateCompleted && !lazy)
			fullState := fresh || req.FullState
			if !fullState && !changes[m.RoomID].Events && len(roomData[m.RoomID]) == 0 {
				continue
			}
			plan.joins = append(plan.joins, joinWork{m.RoomID, fresh, fullState})
		case "invite":
			if newMembership {
				plan.invites = append(plan.invites, m.RoomID)
			}
		case "knock":
			if newMembership {
				plan.knocks = append(plan.knocks, m.RoomID)
			}
		case "leave", "ban":
			if newMembership && (req.Since != nil || roomFilter.IncludeLeave) {
				plan.leaves = append(plan.leaves, m)
			}
		}
	}
	return plan, nil
}

// joinedSince reports whether the user joined the room after position since: they
// were not joined to it then.
func (s *Service) joinedSince(ctx context.Context, roomID, userID string, since int64) (bool, error) {
	state, err := s.rooms.StateAtFor(ctx, roomID, since, map[string]bool{userID: true})
	if err != nil {
		return false, err
	}
	for _, ev := range state {
		if ev.Type == spec.MRoomMember && ev.StateKey != nil && *ev.StateKey == userID {
			var c struct {
				Membership string `json:"membership"`
			}
			if err := json.Unmarshal(ev.Content, &c); err != nil {
				return true, nil
			}
			return c.Membership != "join", nil
		}
	}
	return true, nil
}

// addInvites adds the rooms invited to and knocked on since the token, each with
// the stripped state the user may see.
func (s *Service) addInvites(ctx context.Context, req Request, plan roomPlan, resp *Response) error {
	var ignored map[string]bool
	if len(plan.invites) > 0 {
		var err error
		if ignored, err = s.rooms.IgnoredBy(ctx, req.UserID); err != nil {
			return err
		}
	}
	for _, roomID := range plan.invites {
		ir := &InvitedRoom{}
		var err error
		if ir.InviteState.Events, err = s.rooms.StrippedState(ctx, roomID, req.UserID); err != nil {
			return err
		}
		if invitedBy(ir.InviteState.Events, req.UserID, ignored) {
			continue // the spec's ignoring: an ignored user's invites are not shown
		}
		resp.Rooms.Invite[roomID] = ir
	}
	for _, roomID := range plan.knocks {
		events, err := s.rooms.StrippedState(ctx, roomID, req.UserID)
		if err != nil {
			return err
		}
		resp.Rooms.Knock[roomID] = map[string]any{"knock_state": map[string]any{"events": events}}
	}
	return nil
}

// invitedBy reports whether the invite of userID in stripped state was sent by
// one of the users in senders.
func invitedBy(stripped []map[string]any, userID string, senders map[string]bool) bool {
	if len(senders) == 0 {
		return false
	}
	for _, ev := range stripped {
		if ev["type"] == "m.room.member" && ev["state_key"] == userID {
			sender, _ := ev["sender"].(string)
			return senders[sender]
		}
	}
	return false
}

// addLeaves adds the rooms left or banned from since the token.
func (s *Service) addLeaves(ctx context.Context, req Request, leaves []rooms.MembershipRow, since Token, roomFilter *filter.RoomFilter, resp *Response) error {
	for _, m := range leaves {
		lr, err := s.leftRoom(ctx, req, m, since, roomFilter)
		if err != nil {
			return err
		}
		resp.Rooms.Leave[m.RoomID] = lr
	}
	return nil
}

// addJoinedRooms builds the joined rooms with something to send, each with its
// room account data. Rooms are built concurrently: each is a handful of small
// queries, and on PostgreSQL their round trips, not the work, dominate an initial
// sync of hundreds of rooms.
func (s *Service) addJoinedRooms(ctx context.Context, req Request, joins []joinWork, since, cur Token, roomFilter *filter.RoomFilter, roomData map[string][]any, resp *Response) error {
	built := make([]*JoinedRoom, len(joins))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(joinWorkers)
	for i, w := range joins {
		g.Go(func() error {
			jr, err := s.joinedRoom(gctx, req, w.roomID, since, cur, w.fresh, w.fullState, roomFilter)
			built[i] = jr
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, w := range joins {
		jr := built[i]
		jr.AccountData.Events = append(jr.AccountData.Events, roomData[w.roomID]...)
		if req.Since != nil && !w.fullState && len(jr.Timeline.Events) == 0 && len(jr.State.Events) == 0 && len(jr.AccountData.Events) == 0 {
			// The room's new events all fell to the filter: nothing to send, and
			// an empty entry would end a long-poll for nothing (as in Synapse).
			continue
		}
		resp.Rooms.Join[w.roomID] = jr
	}
	return nil
}

// addEphemeral adds typing and receipts to the joined rooms; a room with only
// those gets an empty timeline.
func (s *Service) addEphemeral(ctx context.Context, req Request, joined []string, since, cur Token, roomFilter *filter.RoomFilter, resp *Response) error {
	eph, err := s.ephemeral(ctx, req, joined, since, cur, roomFilter)
	if err != nil {
		return err
	}
	for roomID, events := range eph {
		jr := resp.Rooms.Join[roomID]
		if jr == nil {
			jr = newJoinedRoom()
			jr.Timeline = Timeline{Events: []rooms.ClientEvent{}, PrevBatch: rooms.Token(cur.Events)}
			resp.Rooms.Join[roomID] = jr
		}
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, events...)
	}
	return nil
}

// addPeeks adds the rooms the device peeks into: afresh after the peek began (or
// in an initial sync), then as their events come, like joined rooms.
func (s *Service) addPeeks(ctx context.Context, req Request, changes map[string]rooms.RoomChange, since, cur Token, roomFilter *filter.RoomFilter, resp *Response) error {
	peeks, err := s.rooms.Peeks(ctx, req.UserID, req.DeviceID)
	if err != nil || len(peeks) == 0 {
		return err
	}
	for _, p := range peeks {
		if !roomAllowed(roomFilter, p.RoomID) {
			continue
		}
		fresh := req.Since == nil || p.StreamPos > since.Events
		if !fresh && !req.FullState && !changes[p.RoomID].Events {
			continue
		}
		jr, err := s.joinedRoom(ctx, req, p.RoomID, since, cur, fresh, fresh || req.FullState, roomFilter)
		if err != nil {
			return err
		}
		if !fresh && len(jr.Timeline.Events) == 0 && len(jr.State.Events) == 0 {
			continue
		}
		if resp.Rooms.Peek == nil {
			resp.Rooms.Peek = map[string]*JoinedRoom{}
		}
		resp.Rooms.Peek[p.RoomID] = jr
	}
	return nil
}

// joinWorkers bounds how many rooms one sync builds at once.
const joinWorkers = 8

// ephemeral collects typing and receipt events per joined room since the token.
// An initial sync gets the current typing users and every receipt.
func (s *Service) ephemeral(ctx context.Context, req Request, joined []string, since, cur Token, f *filter.RoomFilter) (map[string][]any, error) {
	out := map[string][]any{}
	var ef *filter.EventFilter
	if f.Ephemeral != nil {
		ef = &f.Ephemeral.EventFilter
	}
	if eventAllowed(ef, "m.typing") {
		// An initial sync starts from position 0: every room whose typing ever
		// changed on this node, with its typers now, even none, as Synapse does;
		// so a client whose first sync comes after a typer stopped still learns
		// that nobody is typing.
		typingSince := since.Typing
		if req.Since == nil {
			typingSince = 0
		}
		for roomID, users := range s.typing.Changed(joined, typingSince) {
			out[roomID] = append(out[roomID], map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		}
	}
	if since.Receipts < cur.Receipts && eventAllowed(ef, "m.receipt") {
		byRoom, err := s.receipts.Since(ctx, joined, req.UserID, since.Receipts, cur.Receipts)
		if err != nil {
			return nil, err
		}
		for roomID, rs := range byRoom {
			out[roomID] = append(out[roomID], receipts.Event(rs))
		}
	}
	return out, nil
}

// maxToDevice bounds the to-device messages one sync delivers; the rest follow.
const maxToDevice = 100

// addE2EE fills the encryption fields: to-device messages for the device (those up
// to the since token are deleted first: the client has them) and the users sharing a
// room whose devices changed. A rebuild after a wake-up reads only streams that moved.
func (s *Service) addE2EE(ctx context.Context, req Request, since Token, cur *Token, first bool, resp *Response) error {
	if first || since.ToDevice < cur.ToDevice {
		msgs, last, err := s.e2ee.TakeToDevice(ctx, req.UserID, req.DeviceID, since.ToDevice, cur.ToDevice, maxToDevice)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			resp.ToDevice.Events = append(resp.ToDevice.Events, m)
		}
		if len(msgs) > 0 {
			cur.ToDevice = last
			resp.NextBatch = cur.String()
		}
	}
	if req.Since == nil {
		return nil // an initial sync reports no device list changes
	}
	var err error
	resp.DeviceLists.Changed, resp.DeviceLists.Left, err = s.deviceListChanges(ctx, req.UserID, since, *cur)
	return err
}

// deviceListChanges says whose devices the user's clients must refetch (changed:
// their keys changed, or they now share a room with the user for the first time)
// and stop tracking (left: they share no room any more), between since and cur.
func (s *Service) deviceListChanges(ctx context.Context, userID string, since, cur Token) (changed, left []string, err error) {
	if since.DeviceLists >= cur.DeviceLists && since.Events >= cur.Events {
		return nil, nil, nil
	}
	shared, err := s.rooms.SharedUsers(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	if changed, err = s.e2ee.ChangedUsers(ctx, shared, since.DeviceLists, cur.DeviceLists); err != nil {
		return nil, nil, err
	}
	// A user always hears of their own devices, in a room with anyone or not.
	own, err := s.e2ee.OwnDevicesChanged(ctx, userID, since.DeviceLists, cur.DeviceLists)
	if err != nil {
		return nil, nil, err
	}
	if own && !slices.Contains(changed, userID) {
		changed = append(changed, userID)
	}
	memberChanges, err := s.rooms.MemberChangesBetween(ctx, userID, since.Events, cur.Events)
	if err != nil || len(memberChanges) == 0 {
		return changed, nil, err
	}
	sharing := map[string]bool{}
	for _, u := range shared {
		sharing[u] = true
	}
	newly, gone, invited := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, c := range memberChanges {
		switch {
		case c.UserID == userID && (c.Membership == "invite" || c.Membership == "knock"):
			// Not in the room yet: no one's devices matter to the user.
		case c.UserID == userID:
			// The user's own join or leave affects everyone in the room.
			members, err := s.rooms.JoinedUserIDs(ctx, c.RoomID)
			if err != nil {
				return nil, nil, err
			}
			for _, m := range members {
				if c.Membership == "join" {
					newly[m] = true
				} else {
					gone[m] = true
				}
			}
		case c.Membership == "join":
			newly[c.UserID] = true
		case c.Membership == "invite" || c.Membership == "knock":
			// As Synapse does: the client may want to encrypt for them before
			// they join (an invitee's keys let the inviter share the room key).
			invited[c.UserID] = true
		default:
			gone[c.UserID] = true
		}
	}
	for u := range newly {
		if sharing[u] && u != userID && !slices.Contains(changed, u) {
			changed = append(changed, u)
		}
	}
	for u := range invited {
		if u != userID && !slices.Contains(changed, u) {
			changed = append(changed, u)
		}
	}
	for u := range gone {
		if !sharing[u] && u != userID {
			left = append(left, u)
		}
	}
	slices.Sort(left)
	return changed, left, nil
}

// newlyShared lists the users who came to share a joined room with the user between
// since and cur (the user's own joins bring the room's members, another's join
// brings them) and still do, the user not included.
func (s *Service) newlyShared(ctx context.Context, userID string, since, cur Token) ([]string, error) {
	changes, err := s.rooms.MemberChangesBetween(ctx, userID, since.Events, cur.Events)
	if err != nil || len(changes) == 0 {
		return nil, err
	}
	newly := map[string]bool{}
	for _, c := range changes {
		switch {
		case c.Membership != "join":
		case c.UserID == userID:
			members, err := s.rooms.JoinedUserIDs(ctx, c.RoomID)
			if err != nil {
				return nil, err
			}
			for _, m := range members {
				newly[m] = true
			}
		default:
			newly[c.UserID] = true
		}
	}
	delete(newly, userID)
	if len(newly) == 0 {
		return nil, nil
	}
	shared, err := s.rooms.SharedUsers(ctx, userID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range shared {
		if newly[u] {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out, nil
}

// KeyChanges answers /keys/changes: whose devices changed between two sync tokens
// as the user's sync would have told them, joins and leaves in shared rooms
// included.
func (s *Service) KeyChanges(ctx context.Context, userID string, from, to Token) (changed, left []string, err error) {
	cur, err := s.current(ctx)
	if err != nil {
		return nil, nil, err
	}
	to = clampSince(&to, cur)
	from = clampSince(&from, to)
	changed, left, err = s.deviceListChanges(ctx, userID, from, to)
	if changed == nil {
		changed = []string{}
	}
	if left == nil {
		left = []string{}
	}
	return changed, left, err
}

// addKeyCounts adds the device's one-time key counts and unused fallback key types,
// which every response carries.
func (s *Service) addKeyCounts(ctx context.Context, req Request, resp *Response) error {
	var err error
	if resp.DeviceOneTimeKeysCount, err = s.e2ee.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID); err != nil {
		return err
	}
	resp.DeviceUnusedFallbackKeyTypes, err = s.e2ee.UnusedFallbackKeyTypes(ctx, req.UserID, req.DeviceID)
	return err
}

func newJoinedRoom() *JoinedRoom {
	return &JoinedRoom{
		State:               ClientEvents{Events: []rooms.ClientEvent{}},
		Ephemeral:           EventList{Events: []any{}},
		AccountData:         EventList{Events: []any{}},
		UnreadNotifications: map[string]int{},
	}
}

func timelineLimit(f *filter.RoomFilter) int {
	if f.Timeline != nil && f.Timeline.Limit != nil {
		return *f.Timeline.Limit
	}
	return defaultTimelineLimit
}

// timeline returns the room's events after since up to `upTo`, newest last, at most
// the filter's limit, with limited and prev_batch.
func (s *Service) timeline(ctx context.Context, req Request, roomID string, since *Token, upTo int64, f *filter.RoomFilter) (Timeline, error) {
	limit := timelineLimit(f)
	tl := Timeline{Events: []rooms.ClientEvent{}}
	if limit <= 0 {
		tl.Limited = true
		tl.PrevBatch = rooms.Token(upTo)
		return tl, nil
	}
	// One event more than the limit is read: the timeline is limited when it
	// exists, not merely when the limit was reached (a filtered timeline may have
	// no further matching event).
	var tf *filter.RoomEventFilter
	if f.Timeline != nil {
		copied := *f.Timeline
		copied.Limit = nil
		tf = &copied
	}
	q := rooms.MessagesQuery{From: rooms.Token(upTo), Backward: true, Limit: limit + 1, Filter: tf, DeviceID: req.DeviceID, CurrentState: true}
	if since != nil {
		q.To = rooms.Token(since.Events)
	}
	page, err := s.rooms.Messages(ctx, roomID, req.UserID, q)
	if err != nil {
		return tl, err
	}
	tl.Limited = len(page.Chunk) > limit || page.End != ""
	if len(page.Chunk) > limit {
		page.Chunk = page.Chunk[:limit]
	}
	slices.Reverse(page.Chunk)
	tl.Events = page.Chunk
	if len(tl.Events) > 0 {
		tl.PrevBatch = rooms.Token(tl.Events[0].StreamPos - 1)
	} else {
		tl.PrevBatch = rooms.Token(upTo)
	}
	return tl, nil
}

func (s *Service) joinedRoom(ctx context.Context, req Request, roomID string, since, cur Token, fresh, fullState bool, f *filter.RoomFilter) (*JoinedRoom, error) {
	jr := newJoinedRoom()
	var sinceTok *Token
	if !fresh {
		sinceTok = &since
	}
	var err error
	if jr.Timeline, err = s.timeline(ctx, req, roomID, sinceTok, cur.Events, f); err != nil {
		return nil, err
	}
	if fresh && req.Since != nil {
		// Newly joined in an incremental sync: the client holds none of the room's
		// history, so the timeline is limited (as with Synapse and Dendrite) and
		// the client pages back from prev_batch for more.
		jr.Timeline.Limited = true
	}
	// The summary is sent when it may have changed: with the room's state, or
	// after membership events.
	if fullState || jr.Timeline.Limited || slices.ContainsFunc(jr.Timeline.Events, func(ev rooms.ClientEvent) bool { return ev.Type == spec.MRoomMember }) {
		sum, err := s.rooms.RoomSummary(ctx, roomID, req.UserID)
		if err != nil {
			return nil, err
		}
		jr.Summary = &sum
	}
	start := cur.Events
	if len(jr.Timeline.Events) > 0 {
		start = jr.Timeline.Events[0].StreamPos - 1
	}
	lazy := f.State != nil && f.State.LazyLoadMembers
	// senders are the members a lazy-loading client needs to render the timeline.
	senders := map[string]bool{}
	for _, ev := range jr.Timeline.Events {
		senders[ev.Sender] = true
	}
	var state []rooms.ClientEvent
	switch {
	case fullState:
		// A lazy-loading client gets only the members it needs; loading the rest
		// of a large room's roster just to drop it would dominate the sync.
		var members map[string]bool
		if lazy {
			members = map[string]bool{req.UserID: true}
			for u := range senders {
				members[u] = true
			}
		}
		if state, err = s.rooms.StateAtFor(ctx, roomID, start, members); err != nil {
			return nil, err
		}
	case jr.Timeline.Limited:
		// The gap between since and the timeline may hold state changes the
		// client has not seen: send those that differ, every member among them
		// (a join or leave in the gap is news to a lazy-loading client too).
		if state, err = s.stateDelta(ctx, roomID, since.Events, start); err != nil {
			return nil, err
		}
		if lazy {
			if state, err = s.withSenderMembers(ctx, roomID, start, senders, state); err != nil {
				return nil, err
			}
		}
	case lazy && len(jr.Timeline.Events) > 0:
		// No gap: the timeline holds every change, but the client may never have
		// been sent the members of its senders.
		if state, err = s.withSenderMembers(ctx, roomID, start, senders, nil); err != nil {
			return nil, err
		}
	}
	state = withoutTimelineEvents(state, jr.Timeline.Events)
	jr.State.Events = filterState(req, f, state, jr.Timeline.Events, false)
	if lazy && !f.State.IncludeRedundantMembers {
		// Members the device already holds are not sent again; an initial sync
		// starts the device afresh (build resets it).
		if req.Since != nil {
			jr.State.Events = slices.DeleteFunc(jr.State.Events, func(ev rooms.ClientEvent) bool {
				return ev.Type == spec.MRoomMember && s.lazy.known(req.UserID, req.DeviceID, roomID, since.Events, ev)
			})
		}
		s.lazy.record(req.UserID, req.DeviceID, roomID, cur.Events, jr.State.Events, jr.Timeline.Events)
	}
	if jr.State.Events == nil {
		jr.State.Events = []rooms.ClientEvent{} // clients expect the list, if empty
	}
	return jr, nil
}

// stateDelta is the room's state at to that differs from its state at from.
func (s *Service) stateDelta(ctx context.Context, roomID string, from, to int64) ([]rooms.ClientEvent, error) {
	before, err := s.rooms.StateAt(ctx, roomID, from)
	if err != nil {
		return nil, err
	}
	after, err := s.rooms.StateAt(ctx, roomID, to)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, ev := range before {
		seen[ev.EventID] = true
	}
	var out []rooms.ClientEvent
	for _, ev := range after {
		if !seen[ev.EventID] {
			out = append(out, ev)
		}
	}
	return out, nil
}

// withSenderMembers adds to state the member events at position pos of the users in
// senders, those state lacks.
func (s *Service) withSenderMembers(ctx context.Context, roomID string, pos int64, senders map[string]bool, state []rooms.ClientEvent) ([]rooms.ClientEvent, error) {
	if len(senders) == 0 {
		return state, nil
	}
	at, err := s.rooms.StateAtFor(ctx, roomID, pos, senders)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, ev := range state {
		have[ev.EventID] = true
	}
	for _, ev := range at {
		if ev.Type == spec.MRoomMember && !have[ev.EventID] {
			state = append(state, ev)
		}
	}
	return state, nil
}

// withoutTimelineEvents drops from state the events the timeline carries.
func withoutTimelineEvents(state, timeline []rooms.ClientEvent) []rooms.ClientEvent {
	if len(state) == 0 || len(timeline) == 0 {
		return state
	}
	inTimeline := map[string]bool{}
	for _, ev := range timeline {
		inTimeline[ev.EventID] = true
	}
	return slices.DeleteFunc(state, func(ev rooms.ClientEvent) bool { return inTimeline[ev.EventID] })
}

func (s *Service) leftRoom(ctx context.Context, req Request, m rooms.MembershipRow, since Token, f *filter.RoomFilter) (*LeftRoom, error) {
	lr := &LeftRoom{State: ClientEvents{Events: []rooms.ClientEvent{}}, AccountData: EventList{Events: []any{}}}
	var sinceTok *Token
	if req.Since != nil {
		sinceTok = &since
	}
	var err error
	if lr.Timeline, err = s.timeline(ctx, req, m.RoomID, sinceTok, m.StreamPos, f); err != nil {
		return nil, err
	}
	full := lr.Timeline.Limited || req.Since == nil
	if !full {
		// A user who was not joined at the token (invited, say, then joined and
		// left since) never had the room's state: it comes whole.
		if full, err = s.joinedSince(ctx, m.RoomID, req.UserID, since.Events); err != nil {
			return nil, err
		}
	}
	if full {
		start := m.StreamPos
		if len(lr.Timeline.Events) > 0 {
			start = lr.Timeline.Events[0].StreamPos - 1
		}
		state, err := s.rooms.StateAt(ctx, m.RoomID, start)
		if err != nil {
			return nil, err
		}
		lr.State.Events = filterState(req, f, state, lr.Timeline.Events, true)
	}
	return lr, nil
}

// filterState applies the state filter and, when pruneMembers, lazy loading of
// members: with lazy_load_members only the members who sent timeline events (and the
// user) stay.
func filterState(req Request, f *filter.RoomFilter, state, timeline []rooms.ClientEvent, pruneMembers bool) []rooms.ClientEvent {
	sf := f.State
	if sf == nil {
		return state
	}
	senders := map[string]bool{req.UserID: true}
	for _, ev := range timeline {
		senders[ev.Sender] = true
	}
	out := state[:0]
	for _, ev := range state {
		if !eventAllowed(&sf.EventFilter, ev.Type) || sf.Senders != nil && !slices.Contains(*sf.Senders, ev.Sender) ||
			slices.Contains(sf.NotSenders, ev.Sender) {
			continue
		}
		if pruneMembers && sf.LazyLoadMembers && ev.Type == spec.MRoomMember && ev.StateKey != nil && !senders[*ev.StateKey] {
			continue
		}
		out = append(out, ev)
	}
	return out
}

func eventAllowed(f *filter.EventFilter, typ string) bool {
	if f == nil {
		return true
	}
	if f.Types != nil && !matchAny(*f.Types, typ) {
		return false
	}
	return !matchAny(f.NotTypes, typ)
}

func matchAny(patterns []string, typ string) bool {
	for _, p := range patterns {
		if p == "*" || p == typ || len(p) > 0 && p[len(p)-1] == '*' && len(typ) >= len(p)-1 && typ[:len(p)-1] == p[:len(p)-1] {
			return true
		}
	}
	return false
}

func roomAllowed(f *filter.RoomFilter, roomID string) bool {
	if f.Rooms != nil && !slices.Contains(*f.Rooms, roomID) {
		return false
	}
	return !slices.Contains(f.NotRooms, roomID)
}

// ParseFilter reads the filter query parameter: inline JSON or a stored filter ID.
func (s *Service) ParseFilter(ctx context.Context, localpart, param string) (filter.Filter, error) {
	if param == "" {
		return filter.Filter{}, nil
	}
	raw := json.RawMessage(param)
	if param[0] != '{' {
		var id int64
		if _, err := fmt.Sscan(param, &id); err != nil {
			return filter.Filter{}, errInvalidFilter(param)
		}
		stored, err := s.users.Filter(ctx, localpart, id)
		if err != nil {
			return filter.Filter{}, errInvalidFilter(param)
		}
		raw = stored
	}
	f, err := filter.Parse(raw)
	if err != nil {
		return filter.Filter{}, errInvalidFilter(param)
	}
	return f, nil
}
