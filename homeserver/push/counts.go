package push

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

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
	// joined says whether the user is joined to the room now: only then do the
	// room's shared notifications (push_room_notifications) count for them, all
	// those after their join (every one of them came while they were joined).
	joined bool
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
	joinedRooms, err := s.deps.Rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, r := range joinedRooms {
		if m := out[r]; m != nil {
			m.joined = true
		}
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
		byThread, err := s.countAfter(ctx, userID, roomID, m.joined, m.all, "", 0)
		if err != nil {
			return nil, err
		}
		for thread, pos := range m.threads {
			if pos <= m.all {
				continue
			}
			read, err := s.countAfter(ctx, userID, roomID, m.joined, m.all, thread, pos)
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
// by thread; with thread set, only that thread's up to upTo. One statement: the
// room's shared rows (when the user is joined) that the user has no row of their
// own for and that they did not send, plus the user's own rows that notify.
func (s *Service) countAfter(ctx context.Context, userID, roomID string, joined bool, after int64, thread string, upTo int64) (map[string]Counts, error) {
	own := `SELECT thread_id, 1 AS n, CASE WHEN highlight THEN 1 ELSE 0 END AS h FROM push_notifications
		WHERE user_id = $1 AND room_id = $2 AND event_pos > $3 AND notify`
	shared := ` UNION ALL SELECT r.thread_id, 1, 0 FROM push_room_notifications r
		WHERE r.room_id = $2 AND r.event_pos > $3 AND r.sender <> $1 AND NOT EXISTS (SELECT 1 FROM push_notifications x
			WHERE x.user_id = $1 AND x.room_id = $2 AND x.event_pos = r.event_pos)`
	args := []any{userID, roomID, after}
	if thread != "" || upTo > 0 {
		own += ` AND thread_id = $4 AND event_pos <= $5`
		shared += ` AND r.thread_id = $4 AND r.event_pos <= $5`
		args = append(args, thread, upTo)
	}
	q := own
	if joined {
		q += shared
	}
	rows, err := s.deps.DB.Query(ctx, `SELECT thread_id, COUNT(*), SUM(h) FROM (`+q+`) c GROUP BY thread_id`, args...)
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
	rows, err := s.deps.DB.Query(ctx, `SELECT DISTINCT room_id, 0 FROM push_notifications WHERE user_id = $1 AND pos > $2 AND pos <= $3 AND notify
		UNION SELECT DISTINCT room_id, 1 FROM push_room_notifications WHERE pos > $2 AND pos <= $3 AND sender <> $1`,
		userID, since, upTo)
	if err != nil {
		return nil, fmt.Errorf("rooms notified for %s: %w", userID, err)
	}
	defer rows.Close()
	set := map[string]bool{}
	var shared []string
	for rows.Next() {
		var r string
		var isShared int
		if err := rows.Scan(&r, &isShared); err != nil {
			return nil, err
		}
		if isShared == 1 {
			shared = append(shared, r)
		} else {
			set[r] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if len(shared) > 0 {
		// A room's shared rows concern the user only while they are joined.
		joined, err := s.deps.Rooms.JoinedRooms(ctx, userID)
		if err != nil {
			return nil, err
		}
		in := map[string]bool{}
		for _, r := range joined {
			in[r] = true
		}
		for _, r := range shared {
			if in[r] {
				set[r] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	return out, nil
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
	// The user's own rows, and the shared rows of the rooms they are joined to
	// from after their join (not their own events, not events they have a row of
	// their own for), merged newest first.
	joinedRooms, err := s.deps.Rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return Page{}, err
	}
	joinPos, err := s.deps.Rooms.MembershipPositions(ctx, userID, joinedRooms)
	if err != nil {
		return Page{}, err
	}
	q := `SELECT pos, room_id, event_id, thread_id, event_pos, actions, highlight, ts, 0 AS shared FROM push_notifications
		WHERE user_id = $1 AND pos < $2 AND notify`
	if onlyHighlight {
		q += ` AND highlight`
	} else if len(joinedRooms) > 0 {
		marks := make([]string, len(joinedRooms))
		for i := range joinedRooms {
			marks[i] = "$" + strconv.Itoa(i+3)
		}
		q += ` UNION ALL SELECT r.pos, r.room_id, r.event_id, r.thread_id, r.event_pos, r.actions, FALSE, r.ts, 1 FROM push_room_notifications r
		WHERE r.pos < $2 AND r.sender <> $1 AND r.room_id IN (` + strings.Join(marks, ", ") + `) AND NOT EXISTS (SELECT 1 FROM push_notifications x
			WHERE x.user_id = $1 AND x.room_id = r.room_id AND x.event_pos = r.event_pos)`
	}
	var list []Listed
	var eventPos []int64
	roomSet := map[string]bool{}
	// Shared rows from before the user's join are passed over here, so a page
	// may take more than one query.
	for len(list) <= limit {
		args := []any{userID, before}
		if !onlyHighlight {
			for _, r := range joinedRooms {
				args = append(args, r)
			}
		}
		rows, err := s.deps.DB.Query(ctx, q+` ORDER BY pos DESC LIMIT `+strconv.Itoa(limit+1), args...)
		if err != nil {
			return Page{}, fmt.Errorf("notifications of %s: %w", userID, err)
		}
		n := 0
		for rows.Next() {
			n++
			l := Listed{Notification: Notification{UserID: userID}}
			var actions string
			var ep int64
			var shared int
			if err := rows.Scan(&l.Pos, &l.RoomID, &l.EventID, &l.ThreadID, &ep, &actions, &l.Highlight, &l.TS, &shared); err != nil {
				rows.Close()
				return Page{}, fmt.Errorf("notifications of %s: %w", userID, err)
			}
			before = l.Pos
			if shared == 1 && ep <= joinPos[l.RoomID] {
				continue
			}
			if len(list) > limit {
				continue
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
		if n <= limit {
			break
		}
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
