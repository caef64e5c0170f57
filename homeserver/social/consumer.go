package social

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/rooms"
)

// The consumer reads the events stream (rooms.EventsSince) from its own cursor
// (social_cursor 'social'), like the federation sender, and reacts to what
// happened in request rooms and groups whoever caused it: a plain Matrix client's
// join, an answer from another server, an invite from a remote requester. Its
// effects are idempotent (request state moves once; account data edits are sets)
// so an event seen twice — after a crash between the effect and the cursor's
// move, or by two nodes — changes nothing more. The cursor moves after each event.

// maxAttempts is how many times one event is retried before it is skipped, so one
// event that always fails cannot stop the consumer.
const maxAttempts = 5

func (s *Service) initCursor(ctx context.Context) error {
	end, err := s.d.Rooms.LatestPosition(ctx)
	if err != nil {
		return fmt.Errorf("social cursor: %w", err)
	}
	if _, err := s.d.DB.Exec(ctx, `INSERT INTO social_cursor (name, pos) VALUES ('social', $1) ON CONFLICT (name) DO NOTHING`, end); err != nil {
		return fmt.Errorf("social cursor: %w", err)
	}
	return nil
}

func (s *Service) consume() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	failing, attempts := int64(0), 0
	for {
		for {
			n, failedAt, err := s.consumeOnce(s.ctx)
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				if failedAt == failing {
					attempts++
				} else {
					failing, attempts = failedAt, 1
				}
				slog.Warn("social: consume events", "pos", failedAt, "attempt", attempts, "err", err)
				if attempts >= maxAttempts && failedAt > 0 {
					slog.Error("social: skipping an event that keeps failing", "pos", failedAt, "err", err)
					s.moveCursor(s.ctx, failedAt)
					continue
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

// consumeOnce handles the next batch after the cursor. It returns how many events
// it handled and, on error, the position of the event that failed.
func (s *Service) consumeOnce(ctx context.Context) (int, int64, error) {
	var cursor int64
	if err := s.d.DB.QueryRow(ctx, `SELECT pos FROM social_cursor WHERE name = 'social'`).Scan(&cursor); err != nil {
		return 0, 0, fmt.Errorf("social cursor: %w", err)
	}
	evs, err := s.d.Rooms.EventsSince(ctx, cursor, 100)
	if err != nil {
		return 0, 0, err
	}
	for i, e := range evs {
		if err := s.onEvent(ctx, e); err != nil {
			return i, e.Pos, fmt.Errorf("event %s in %s: %w", e.EventID, e.RoomID, err)
		}
		if err := s.moveCursor(ctx, e.Pos); err != nil {
			return i, e.Pos, err
		}
	}
	return len(evs), 0, nil
}

func (s *Service) moveCursor(ctx context.Context, pos int64) error {
	if _, err := s.d.DB.Exec(ctx, `UPDATE social_cursor SET pos = $1 WHERE name = 'social' AND pos < $1`, pos); err != nil {
		return fmt.Errorf("social cursor: %w", err)
	}
	return nil
}

// onEvent reacts to one event of the stream.
func (s *Service) onEvent(ctx context.Context, e rooms.OutboundEvent) error {
	if e.Type == spec.MRoomMember && e.HasStateKey {
		handled, err := s.onRequestMember(ctx, e)
		if err != nil || handled {
			return err
		}
	}
	if !e.HasStateKey {
		return nil
	}
	group, err := s.isGroup(ctx, e.RoomID)
	if err != nil || !group {
		return err
	}
	return s.onGroupState(ctx, e)
}

// onRequestMember follows a membership change in a request room; handled is false
// when the room is none.
func (s *Service) onRequestMember(ctx context.Context, e rooms.OutboundEvent) (bool, error) {
	r, ok, err := s.requestIn(ctx, e.RoomID)
	if err != nil {
		return false, err
	}
	if !ok {
		if e.Membership != spec.Invite || !s.isLocal(e.StateKey) {
			return false, nil
		}
		// An invite of a local user: a request if the room's create event says
		// so (for a room on another server, as its stripped state shows it).
		if r, ok, err = s.requestFromInvite(ctx, e); err != nil || !ok {
			return false, err
		}
	}
	switch {
	case e.StateKey == r.target && e.Membership == spec.Invite && r.state == statePending:
		if !s.isLocal(r.target) {
			return true, nil
		}
		blocked, err := s.Ignores(ctx, r.target, r.requester)
		if err != nil {
			return true, err
		}
		if blocked {
			// A blocked user's request is declined at once, unseen.
			return true, s.decline(ctx, r)
		}
		s.publish(Notice{UserID: r.target, Kind: KindFriendRequest, RoomID: r.roomID, From: r.requester, Message: r.message})
	case e.StateKey == r.target && e.Membership == spec.Join && r.state == statePending:
		return true, s.accepted(ctx, r)
	case e.StateKey == r.target && (e.Membership == spec.Leave || e.Membership == spec.Ban) && r.state == statePending:
		state := stateDeclined
		if e.Sender != r.target {
			state = stateCancelled
		}
		return true, s.ended(ctx, r, state, e.Sender)
	case e.StateKey == r.requester && (e.Membership == spec.Leave || e.Membership == spec.Ban) && r.state == statePending:
		return true, s.ended(ctx, r, stateCancelled, r.requester)
	case (e.StateKey == r.requester || e.StateKey == r.target) && (e.Membership == spec.Leave || e.Membership == spec.Ban) && r.state == stateAccepted:
		return true, s.removed(ctx, r, e.StateKey)
	}
	return true, nil
}

// requestFromInvite records the request an invite carries, if it is one: the
// room's create content names the invitee as the target and the sender as the
// requester.
func (s *Service) requestFromInvite(ctx context.Context, e rooms.OutboundEvent) (requestRow, bool, error) {
	stripped, err := s.d.Rooms.StrippedState(ctx, e.RoomID, e.StateKey)
	if err != nil {
		return requestRow{}, false, err
	}
	for _, ev := range stripped {
		if ev["type"] != spec.MRoomCreate {
			continue
		}
		raw, _ := json.Marshal(ev["content"])
		m := gjson.GetBytes(raw, gjson.Escape(FriendRequestMarker))
		if !m.Exists() || m.Get("target").String() != e.StateKey || m.Get("requester").String() != e.Sender {
			return requestRow{}, false, nil
		}
		now := nowMs()
		r := requestRow{roomID: e.RoomID, requester: e.Sender, target: e.StateKey, message: m.Get("message").String(),
			state: statePending, created: now, updated: now}
		if err := s.record(ctx, r); err != nil {
			return requestRow{}, false, err
		}
		r, ok, err := s.requestIn(ctx, e.RoomID)
		return r, ok, err
	}
	return requestRow{}, false, nil
}

// onGroupState tells local members of a group what changed in it.
func (s *Service) onGroupState(ctx context.Context, e rooms.OutboundEvent) error {
	switch e.Type {
	case spec.MRoomMember:
		if !s.isLocal(e.StateKey) {
			return nil
		}
		switch {
		case e.Membership == spec.Invite:
			s.publish(Notice{UserID: e.StateKey, Kind: KindGroupInvite, RoomID: e.RoomID, From: e.Sender})
		case (e.Membership == spec.Leave || e.Membership == spec.Ban) && e.Sender != e.StateKey:
			s.publish(Notice{UserID: e.StateKey, Kind: KindGroupRemoved, RoomID: e.RoomID, From: e.Sender})
		}
		return nil
	case spec.MRoomName, spec.MRoomTopic, "m.room.avatar", spec.MRoomPowerLevels, "m.room.pinned_events", GroupMarker:
	default:
		return nil
	}
	kind := KindGroupUpdated
	if e.Type == GroupMarker {
		pdu, err := s.d.Rooms.PDU(ctx, e.EventID)
		if err != nil {
			return err
		}
		if gjson.GetBytes(pdu.Content(), "dissolved").Bool() {
			kind = KindGroupDissolved
		}
	}
	members, err := s.d.Rooms.JoinedUserIDs(ctx, e.RoomID)
	if err != nil {
		return err
	}
	for _, u := range members {
		if s.isLocal(u) && u != e.Sender {
			s.publish(Notice{UserID: u, Kind: kind, RoomID: e.RoomID, From: e.Sender})
		}
	}
	return nil
}

// isGroup reports whether the room's create event carries the group marker. A
// room whose create event this server does not hold (an invite from another
// server) is not known as a group yet, and is not remembered as none.
func (s *Service) isGroup(ctx context.Context, roomID string) (bool, error) {
	s.groupMu.Lock()
	g, ok := s.groups[roomID]
	s.groupMu.Unlock()
	if ok {
		return g, nil
	}
	content, err := s.d.Rooms.CreateContent(ctx, roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	g = gjson.GetBytes(content, gjson.Escape(GroupMarker)).Exists()
	s.groupMu.Lock()
	if len(s.groups) > 100_000 {
		clear(s.groups)
	}
	s.groups[roomID] = g
	s.groupMu.Unlock()
	return g, nil
}
