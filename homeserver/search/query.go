package search

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
)

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// Query is one room_events search.
type Query struct {
	UserID string
	Term   string
	// Keys limits the fields searched (content.body, content.name,
	// content.topic); empty means all three.
	Keys []string
	// Rooms limits the rooms searched (always further limited to the rooms the
	// user has a membership in); nil means all of them.
	Rooms, NotRooms     []string
	Senders, NotSenders []string
	Limit               int
	// Recent orders newest first instead of by rank.
	Recent bool
	// Batch is the next_batch of the previous page, "" for the first.
	Batch string
}

// Hit is one search result.
type Hit struct {
	Rank  float64
	Event rooms.ClientEvent
}

// Result is one page of results.
type Result struct {
	Hits []Hit
	// Count is how many indexed events match in the searchable rooms: an upper
	// bound of what the user may see (history before they joined is counted).
	Count      int
	Highlights []string
	NextBatch  string
}

// Words splits a search term into the words matched: letters and digits.
func Words(term string) []string {
	return strings.FieldsFunc(strings.ToLower(term), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
}

// Search runs a query for its user.
func (s *Service) Search(ctx context.Context, q Query) (Result, error) {
	words := Words(q.Term)
	res := Result{Highlights: words, Hits: []Hit{}}
	if len(words) == 0 {
		return res, nil
	}
	if q.Limit <= 0 || q.Limit > 100 {
		q.Limit = 10
	}
	for _, k := range q.Keys {
		if _, ok := map[string]bool{"content.body": true, "content.name": true, "content.topic": true}[k]; !ok {
			return res, mxerror.New(mxerror.InvalidParam, "unknown search key %s", k)
		}
	}
	var offset, before int64
	if q.Batch != "" {
		n, err := strconv.ParseInt(q.Batch[1:], 10, 64)
		if err != nil || (q.Batch[0] == 'o' && n < 0) || (q.Batch[0] == 'p' && n == 0) || (q.Batch[0] != 'o' && q.Batch[0] != 'p') || (q.Batch[0] == 'p') != q.Recent {
			return res, mxerror.New(mxerror.InvalidParam, "invalid next_batch")
		}
		if q.Recent {
			before = n
		} else {
			offset = n
		}
	}
	roomIDs, err := s.searchableRooms(ctx, q)
	if err != nil || len(roomIDs) == 0 {
		return res, err
	}
	where, args := s.where(q, words, roomIDs)
	if res.Count, err = s.count(ctx, where, args); err != nil {
		return res, err
	}
	// Candidates are read in batches and filtered for visibility until a page is
	// full or they run out.
	for len(res.Hits) < q.Limit {
		batch := q.Limit * 2
		cands, err := s.candidates(ctx, q.Recent, where, args, batch, offset, before)
		if err != nil {
			return res, err
		}
		ids := make([]string, len(cands))
		for i, c := range cands {
			ids[i] = c.id
		}
		visible, err := s.deps.Rooms.VisibleEvents(ctx, q.UserID, ids)
		if err != nil {
			return res, err
		}
		for i, c := range cands {
			if len(res.Hits) == q.Limit {
				// The page ends inside this batch: the next one starts here.
				cands = cands[:i]
				break
			}
			ev, ok := visible[c.id]
			if !ok || ev.Unsigned["redacted_because"] != nil {
				continue
			}
			res.Hits = append(res.Hits, Hit{Rank: c.rank, Event: ev})
		}
		if len(cands) > 0 {
			offset += int64(len(cands))
			before = cands[len(cands)-1].pos
		}
		if len(cands) < batch && len(res.Hits) < q.Limit {
			return res, nil // exhausted
		}
		if len(res.Hits) == q.Limit {
			break
		}
	}
	if q.Recent {
		res.NextBatch = "p" + strconv.FormatInt(before, 10)
	} else {
		res.NextBatch = "o" + strconv.FormatInt(offset, 10)
	}
	return res, nil
}

// searchableRooms is the rooms the user has ever had a membership in, narrowed
// by the query's room filters.
func (s *Service) searchableRooms(ctx context.Context, q Query) ([]string, error) {
	ms, err := s.deps.Rooms.UserMemberships(ctx, q.UserID)
	if err != nil {
		return nil, err
	}
	var only map[string]bool
	if q.Rooms != nil {
		only = map[string]bool{}
		for _, r := range q.Rooms {
			only[r] = true
		}
	}
	not := map[string]bool{}
	for _, r := range q.NotRooms {
		not[r] = true
	}
	var out []string
	for _, m := range ms {
		if (only == nil || only[m.RoomID]) && !not[m.RoomID] {
			out = append(out, m.RoomID)
		}
	}
	return out, nil
}

func (s *Service) from() string {
	if s.deps.DB.Dialect == storage.SQLite {
		return `search_fts JOIN search_events e ON e.pos = search_fts.rowid`
	}
	return `search_events e`
}

func (s *Service) rank() string {
	if s.deps.DB.Dialect == storage.SQLite {
		return `-bm25(search_fts)`
	}
	return `ts_rank(e.vec, plainto_tsquery('english', $1))`
}

// where builds the match and filter clause; $1 is always the text query.
func (s *Service) where(q Query, words []string, roomIDs []string) (string, []any) {
	var b strings.Builder
	var args []any
	if s.deps.DB.Dialect == storage.SQLite {
		// Each word quoted: FTS5 syntax in the term is matched as text.
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = `"` + w + `"`
		}
		args = append(args, strings.Join(quoted, " "))
		b.WriteString(`search_fts MATCH $1`)
	} else {
		args = append(args, strings.Join(words, " "))
		b.WriteString(`e.vec @@ plainto_tsquery('english', $1)`)
	}
	in := func(col string, vals []string, not bool) {
		if len(vals) == 0 {
			return
		}
		marks := make([]string, len(vals))
		for i, v := range vals {
			args = append(args, v)
			marks[i] = "$" + strconv.Itoa(len(args))
		}
		op := " IN ("
		if not {
			op = " NOT IN ("
		}
		b.WriteString(" AND " + col + op + strings.Join(marks, ", ") + ")")
	}
	in("e.room_id", roomIDs, false)
	in("e.sender", q.Senders, false)
	in("e.sender", q.NotSenders, true)
	in("e.key", q.Keys, false)
	return b.String(), args
}

// cand is one candidate hit, before the visibility filter.
type cand struct {
	pos  int64
	id   string
	rank float64
}

// count is how many indexed events match.
func (s *Service) count(ctx context.Context, where string, args []any) (int, error) {
	var n int
	if err := s.deps.DB.QueryRow(ctx, `SELECT COUNT(*) FROM `+s.from()+` WHERE `+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("search count: %w", err)
	}
	return n, nil
}

// candidates reads up to batch matching events: by rank from offset, or newest
// first before position before (0: from the newest; backfilled history has
// negative positions).
func (s *Service) candidates(ctx context.Context, recent bool, where string, args []any, batch int, offset, before int64) ([]cand, error) {
	cargs := append([]any(nil), args...)
	order := ` ORDER BY rank DESC, e.pos DESC`
	if recent {
		order = ` ORDER BY e.pos DESC`
		offset = 0 // the position cursor moves instead
		if before != 0 {
			cargs = append(cargs, before)
			where += fmt.Sprintf(` AND e.pos < $%d`, len(cargs))
		}
	}
	cargs = append(cargs, batch, offset)
	rows, err := s.deps.DB.Query(ctx, `SELECT e.pos, e.event_id, `+s.rank()+` AS rank FROM `+s.from()+` WHERE `+where+order+
		fmt.Sprintf(` LIMIT $%d OFFSET $%d`, len(cargs)-1, len(cargs)), cargs...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	var cands []cand
	for rows.Next() {
		var c cand
		if err := rows.Scan(&c.pos, &c.id, &c.rank); err != nil {
			return nil, fmt.Errorf("search: %w", err)
		}
		cands = append(cands, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	return cands, nil
}
