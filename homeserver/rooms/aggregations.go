package rooms

import (
	"context"
	"fmt"
	"strings"
)

// bundle adds the server-side aggregations of the spec's "bundled aggregations" to
// events: the latest edit (m.replace, from the original sender only) and a thread
// summary (m.thread) in unsigned["m.relations"]. Redacted relations do not count.
func (s *Service) bundle(ctx context.Context, userID string, events []ClientEvent) error {
	if len(events) == 0 {
		return nil
	}
	idx := map[string]*ClientEvent{}
	args := []any{}
	var marks []string
	for i := range events {
		idx[events[i].EventID] = &events[i]
		args = append(args, events[i].EventID)
		marks = append(marks, fmt.Sprintf("$%d", len(args)))
	}
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE relates_to IN (`+strings.Join(marks, ", ")+`)
		AND rel_type IN ('m.replace', 'm.thread') AND redacted_by IS NULL ORDER BY stream_pos`, args...)
	if err != nil {
		return err
	}
	// An edit or a thread reply the user may not see (sent after they left) does
	// not show through the event it relates to either.
	if rows, err = s.filterMixedRows(ctx, User(userID), rows); err != nil {
		return err
	}
	type thread struct {
		count        int
		latest       eventRow
		participated bool
	}
	threads := map[string]*thread{}
	for _, r := range rows {
		// rows carry their target in relates_to; read it back from the content.
		target := relTarget(r)
		ev := idx[target]
		if ev == nil {
			continue
		}
		switch relType(r) {
		case "m.replace":
			if r.sender != ev.Sender || r.typ != ev.Type {
				continue // only the original sender can edit, and not into another type
			}
			edit := r.clientEvent()
			rel := relations(ev)
			rel["m.replace"] = edit
		case "m.thread":
			t := threads[target]
			if t == nil {
				t = &thread{participated: ev.Sender == userID}
				threads[target] = t
			}
			t.count++
			t.latest = r
			t.participated = t.participated || r.sender == userID
		}
	}
	for target, t := range threads {
		relations(idx[target])["m.thread"] = map[string]any{
			"count": t.count, "latest_event": t.latest.clientEvent(), "current_user_participated": t.participated,
		}
	}
	return nil
}

func relations(ev *ClientEvent) map[string]any {
	if ev.Unsigned == nil {
		ev.Unsigned = map[string]any{}
	}
	rel, _ := ev.Unsigned["m.relations"].(map[string]any)
	if rel == nil {
		rel = map[string]any{}
		ev.Unsigned["m.relations"] = rel
	}
	return rel
}

// Threads is a page of thread roots.
type Threads struct {
	Chunk     []ClientEvent `json:"chunk"`
	NextBatch string        `json:"next_batch,omitempty"`
}

// ThreadRoots lists a room's threads, most recently active first. With
// participated, only threads the user started or replied in.
func (s *Service) ThreadRoots(ctx context.Context, roomID, userID string, participated bool, from string, limit int) (Threads, error) {
	if err := s.checkCanReadCurrent(ctx, roomID, userID); err != nil {
		return Threads{}, err
	}
	if limit <= 0 || limit > 100 {
		limit = 20
	}
	before := int64(1<<62 - 1)
	if from != "" {
		var err error
		if before, err = ParseToken(from); err != nil {
			return Threads{}, err
		}
	}
	q := `SELECT t.relates_to, MAX(t.stream_pos) AS last FROM events t WHERE t.room_id = $1 AND t.rel_type = 'm.thread'
		AND t.redacted_by IS NULL GROUP BY t.relates_to HAVING MAX(t.stream_pos) < $2`
	args := []any{roomID, before}
	if participated {
		q += ` AND (SUM(CASE WHEN t.sender = $3 THEN 1 ELSE 0 END) > 0
			OR EXISTS (SELECT 1 FROM events r WHERE r.event_id = t.relates_to AND r.sender = $3))`
		args = append(args, userID)
	}
	q += fmt.Sprintf(` ORDER BY last DESC LIMIT %d`, limit+1)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return Threads{}, fmt.Errorf("threads of %s: %w", roomID, err)
	}
	type root struct {
		id   string
		last int64
	}
	var roots []root
	for rows.Next() {
		var r root
		if err := rows.Scan(&r.id, &r.last); err != nil {
			rows.Close()
			return Threads{}, err
		}
		roots = append(roots, r)
	}
	rows.Close()
	res := Threads{Chunk: []ClientEvent{}}
	if len(roots) > limit {
		res.NextBatch = Token(roots[limit-1].last)
		roots = roots[:limit]
	}
	v, err := s.newVisibility(ctx, roomID, User(userID))
	if err != nil {
		return Threads{}, err
	}
	for _, r := range roots {
		evs, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1 AND room_id = $2`, r.id, roomID)
		if err != nil {
			return Threads{}, err
		}
		if len(evs) == 0 {
			continue
		}
		if err := v.loadErased(ctx, evs); err != nil {
			return Threads{}, err
		}
		if shown, ok, err := v.show(ctx, evs[0]); err != nil {
			return Threads{}, err
		} else if ok {
			res.Chunk = append(res.Chunk, shown.clientEvent())
		}
	}
	return res, s.bundle(ctx, userID, res.Chunk)
}
