package clientsync

import (
	"context"
	"slices"
	"time"

	"github.com/hongyan/hongyan/homeserver/filter"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/rooms"
)

// addUnread puts the unread counts on every joined room of the response, and
// adds the rooms whose counts changed through a new notification since the
// token (the evaluator stores it after the event was synced), with an empty
// timeline. A receipt that lowers the counts brings its room in as an ephemeral
// event already.
func (s *Service) addUnread(ctx context.Context, req Request, joined []string, since, cur Token, f *filter.RoomFilter, resp *Response) error {
	if s.push == nil {
		return nil
	}
	if req.Since != nil && since.Notifications < cur.Notifications {
		notified, err := s.push.RoomsNotifiedBetween(ctx, req.UserID, since.Notifications, cur.Notifications)
		if err != nil {
			return err
		}
		for _, roomID := range notified {
			if resp.Rooms.Join[roomID] == nil && slices.Contains(joined, roomID) {
				jr := newJoinedRoom()
				jr.Timeline = Timeline{Events: []rooms.ClientEvent{}, PrevBatch: rooms.Token(cur.Events)}
				resp.Rooms.Join[roomID] = jr
			}
		}
	}
	if len(resp.Rooms.Join) == 0 {
		return nil
	}
	ids := make([]string, 0, len(resp.Rooms.Join))
	for id := range resp.Rooms.Join {
		ids = append(ids, id)
	}
	threads := f.Timeline != nil && f.Timeline.UnreadThreadNotifications
	counts, err := s.push.UnreadCounts(ctx, req.UserID, ids, threads)
	if err != nil {
		return err
	}
	for id, jr := range resp.Rooms.Join {
		c := counts[id]
		jr.UnreadNotifications = map[string]int{"notification_count": c.Notifications, "highlight_count": c.Highlights}
		if threads && len(c.Threads) > 0 {
			jr.UnreadThreadNotifications = c.Threads
		}
	}
	return nil
}

// unreadCounts is one room's counts for sliding sync (threads included).
func (s *Service) unreadCounts(ctx context.Context, userID, roomID string) (push.Counts, error) {
	if s.push == nil {
		return push.Counts{}, nil
	}
	c, err := s.push.UnreadCounts(ctx, userID, []string{roomID}, false)
	return c[roomID].Counts, err
}

// evaluatorWait bounds how long a sync waits for the push evaluator to catch up
// with the events it is about to send: long enough for an evaluator keeping up,
// short enough that a lagging one does not hold back messages. Past it the
// counts follow in a later response (push.LateSubject wakes the sync).
// initialWait is the longer bound for an initial sync, which is slow anyway and
// whose counts a client shows until the next change.
const (
	evaluatorWait = 50 * time.Millisecond
	initialWait   = 500 * time.Millisecond
)

// awaitInitialCounts gives an initial sync's counts the longer wait.
func (s *Service) awaitInitialCounts(ctx context.Context, cur *Token) {
	if s.push != nil && s.push.WaitEvaluated(ctx, cur.Events, initialWait) {
		if n, err := s.push.Position(ctx); err == nil {
			cur.Notifications = n
		}
	}
}

// awaitCounts waits until the push evaluator has evaluated every event up to the
// events position in pos, then re-reads the notifications position into pos: a
// response's counts and its token then cover the events it carries, and an idle
// sync does not wake again for counts of events it already sent.
func (s *Service) awaitCounts(ctx context.Context, pos map[string]int64) {
	if s.push == nil {
		return
	}
	if s.push.WaitEvaluated(ctx, pos["events"], evaluatorWait) {
		if n, err := s.push.Position(ctx); err == nil {
			pos["push_notifications"] = n
		}
	}
}
