package push

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Unread counts are computed when asked, from the stored notifications and the
// user's read receipts (m.read and m.read.private, through the receipts service):
// a notification is unread when its event comes after the user's current
// membership event (their join) and after the later of the user's unthreaded
// receipt and the receipt of its thread ("main" for the main timeline), as in
// Synapse. Nothing is kept per user and room, so a receipt changes the counts
// the moment it is stored, and there is no second copy to fall out of step.

// Unread is a user's unread counts in one room.
type Unread struct {
	// Counts are the room's counts: every thread's when threads were not asked
	// for, the main timeline's only when they were.
	Counts
	// Threads are the counts of each thread with any (only when asked for).
	Threads map[string]Counts
}

// readMarks are a user's read positions in one room: the unthreaded receipt and
// each thread's ("" is the main timeline), as events-stream positions.
type readMarks struct {
	all     int64
	threads map[string]int64
}

func (m readMarks) threshold(thread string) int64 {
	return max(m.all, m.threads[thread])
}

// marksOf reads the user's read positions in the rooms.
func (s *Service) marksOf(ctx context.Context, userID string, roomIDs []string) (map[string]*readMarks, error) {
	out := make(map[string]*readMarks, len(roomIDs))
	for _, r := range roomIDs {
		out[r] = &readMarks{}
	}
	// Nothing from before the user's current membership counts: an invite that
	// notified them is not unread once they joined.
	joined, err := s.deps.Rooms.MembershipPositions(ctx, userID, roomIDs)
	if err != nil {
		return nil, err
	}
	for r, p := range joined {
		if m := out[r]; m != nil && p > 0 {
			m.all = p
		}
	}
	if s.deps.Receipts == nil {
		return out, nil
	}
	markers, err := s.deps.Receipts.ReadMarkers(ctx, userID, roomIDs)
	if err != nil || len(markers) == 0 {
		return out, err
	}
	ids := make([]string, 0, len(markers))
	for _, m := range markers {
		ids = append(ids, m.EventID)
	}
	pos, err := s.deps.Rooms.EventPositions(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, m := range markers {
		p, ok := pos[m.EventID]
		rm := out[m.RoomID]
		if !ok || rm == nil {
			continue
		}
		switch m.ThreadID {
		case "":
			rm.all = max(rm.all, p)
		default:
			thread := m.ThreadID
			if thread == "main" {
				thread = ""
			}
			if rm.threads == nil {
				rm.threads = map[string]int64{}
			}
			rm.threads[thread] = max(rm.threads[thread], p)
		}
	}
	return out, nil
}

// UnreadCounts returns the user's unread counts in each of the rooms. With
// threads, the room's counts are the main timeline's and each thread's are apart
// (a client that asked for unread_thread_notifications); without, the room's
// counts include its threads.
func (s *Service) UnreadCounts(ctx context.Context, userID string, roomIDs []string, threads bool) (map[string]Unread, error) {
	marks, err := s.marksOf(ctx, userID, roomIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Unread, len(roomIDs))
	for _, roomID := range roomIDs {
		m := marks[roomID]
		// Counted in SQL from the covering index: every thread after the
		// unthreaded mark, then a thread's own receipt takes off what it covers.
		byThread, err := s.countAfter(ctx, userID, roomID, m.all, "", 0)
		if err != nil {
			return nil, err
		}
		for thread, pos := range m.threads {
			if pos <= m.all {
				continue
			}
			read, err := s.countAfter(ctx, userID, roomID, m.all, thread, pos)
			if err != nil {
				return nil, err
			}
			c := byThread[thread]
			c.Notifications -= read[thread].Notifications
			c.Highlights -= read[thread].Highlights
			byThread[thread] = c
		}
		var u Unread
		for thread, c := range byThread {
			if c.Notifications <= 0 {
				continue
			}
			if threads && thread != "" {
				if u.Threads == nil {
					u.Threads = map[string]Counts{}
				}
				u.Threads[thread] = c
				continue
			}
			u.Notifications += c.Notifications
			u.Highlights += c.Highlights
		}
		out[roomID] = u
	}
	return out, nil
}

// countAfter counts the user's notifications in the room after position after,
// by thread; with thread set, only that thread's up to upTo.
func (s *Service) countAfter(ctx context.Context, userID, roomID string, after int64, thread string, upTo int64) (map[string]Counts, error) {
	q := `SELECT thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END) FROM push_notifications
		WHERE user_id = $1 AND room_id = $2 AND event_pos > $3`
	args := []any{userID, roomID, after}
	if thread != "" || upTo > 0 {
		q += ` AND thread_id = $4 AND event_pos <= $5`
		args = append(args, thread, upTo)
	}
	rows, err := s.deps.DB.Query(ctx, q+` GROUP BY thread_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("unread counts of %s in %s: %w", userID, roomID, err)
	}
	defer rows.Close()
	out := map[string]Counts{}
	for rows.Next() {
		var t string
		var c Counts
		if err := rows.Scan(&t, &c.Notifications, &c.Highlights); err != nil {
			return nil, fmt.Errorf("unread counts of %s in %s: %w", userID, roomID, err)
		}
		out[t] = c
	}
	return out, rows.Err()
}

// FillUnread sets the Unread counts of the notifications (the room's counts,
// threads included), one count per user and room.
func (s *Service) FillUnread(ctx context.Context, ns []Notification) error {
	rooms := map[string][]string{}
	seen := map[[2]string]bool{}
	for _, n := range ns {
		k := [2]string{n.UserID, n.RoomID}
		if !seen[k] {
			seen[k] = true
			rooms[n.UserID] = append(rooms[n.UserID], n.RoomID)
		}
	}
	counts := map[[2]string]Counts{}
	for user, rs := range rooms {
		u, err := s.UnreadCounts(ctx, user, rs, false)
		if err != nil {
			return err
		}
		for r, c := range u {
			counts[[2]string{user, r}] = c.Counts
		}
	}
	for i := range ns {
		ns[i].Unread = counts[[2]string{ns[i].UserID, ns[i].RoomID}]
	}
	return nil
}

// RoomsNotifiedBetween returns the rooms in which the user was notified at
// positions of the notifications stream in (since, upTo]: their counts changed,
// so an incremental sync includes them.
func (s *Service) RoomsNotifiedBetween(ctx context.Context, userID string, since, upTo int64) ([]string, error) {
	if since >= upTo {
		return nil, nil
	}
	rows, err := s.deps.DB.Query(ctx, `SELECT DISTINCT room_id FROM push_notifications WHERE user_id = $1 AND pos > $2 AND pos <= $3`,
		userID, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("rooms notified for %s: %w", userID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Listed is one entry of GET /notifications, before its event is read.
type Listed struct {
	Notification
	// Read is true when the user's read receipts cover the event.
	Read bool
}

// Page is one page of a user's notifications, newest first.
type Page struct {
	Notifications []Listed
	// Next is the token for the next (older) page; "" at the end.
	Next string
}

// List returns a page of the user's notifications, newest first, older than the
// from token ("" for the newest), only highlights when asked. The caller reads
// each event through the visibility filter.
func (s *Service) List(ctx context.Context, userID, from string, limit int, onlyHighlight bool) (Page, error) {
	before := int64(1<<62 - 1)
	if from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n < 0 {
			return Page{}, mxerror.New(mxerror.InvalidParam, "invalid from token %q", from)
		}
		before = n
	}
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	q := `SELECT pos, room_id, event_id, thread_id, event_pos, actions, highlight, ts FROM push_notifications
		WHERE user_id = $1 AND pos < $2`
	if onlyHighlight {
		q += ` AND highlight`
	}
	rows, err := s.deps.DB.Query(ctx, q+` ORDER BY pos DESC LIMIT $3`, userID, before, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("notifications of %s: %w", userID, err)
	}
	var list []Listed
	var eventPos []int64
	roomSet := map[string]bool{}
	for rows.Next() {
		l := Listed{Notification: Notification{UserID: userID}}
		var actions string
		var ep int64
		if err := rows.Scan(&l.Pos, &l.RoomID, &l.EventID, &l.ThreadID, &ep, &actions, &l.Highlight, &l.TS); err != nil {
			rows.Close()
			return Page{}, fmt.Errorf("notifications of %s: %w", userID, err)
		}
		if err := json.Unmarshal([]byte(actions), &l.Actions); err != nil {
			rows.Close()
			return Page{}, fmt.Errorf("notification %d: actions: %w", l.Pos, err)
		}
		list = append(list, l)
		eventPos = append(eventPos, ep)
		roomSet[l.RoomID] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("notifications of %s: %w", userID, err)
	}
	var page Page
	if len(list) > limit {
		list, eventPos = list[:limit], eventPos[:limit]
		page.Next = strconv.FormatInt(list[limit-1].Pos, 10)
	}
	roomIDs := make([]string, 0, len(roomSet))
	for r := range roomSet {
		roomIDs = append(roomIDs, r)
	}
	marks, err := s.marksOf(ctx, userID, roomIDs)
	if err != nil {
		return Page{}, err
	}
	for i := range list {
		list[i].Read = eventPos[i] <= marks[list[i].RoomID].threshold(list[i].ThreadID)
	}
	page.Notifications = list
	return page, nil
}
