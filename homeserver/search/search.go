// Package search is server-side message search: a full-text index of the text of
// room events (m.room.message body, m.room.name name, m.room.topic topic) and the
// queries /search runs over it. Encrypted events are never indexed: the server
// cannot read them.
//
// The index is fed like the federation sender: a loop reads the events stream
// (rooms.Service.IndexEventsSince) from a cursor in this package's own table
// (search_cursor) and indexes each batch and moves the cursor in one transaction.
// Bus notices (rooms.NoticeSubject) only wake it, so an event is never lost to a
// missed notice, and events received over federation are indexed like local ones.
// A redaction removes its target from the index.
//
// Every hit is read back through the rooms visibility filter for the searcher
// (rooms.Service.VisibleEvents), and candidates are limited to rooms the
// searcher has a membership in, so search never shows what /messages would not.
//
// SQLite uses FTS5 (porter stemmer; bm25 rank); PostgreSQL a tsvector column
// with a GIN index ('english' configuration; ts_rank).
package search

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// Deps are the search service's dependencies.
type Deps struct {
	DB    *storage.DB
	Rooms *rooms.Service
	// Bus wakes the indexer when events commit; nil leaves it to its one-second
	// tick.
	Bus *nats.Conn
	// Log is where indexing failures go; nil means slog.Default().
	Log *slog.Logger
}

// Service indexes events and answers searches.
type Service struct {
	deps   Deps
	log    *slog.Logger
	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sub    *nats.Subscription
}

// New returns a search service; Start begins indexing.
func New(deps Deps) *Service {
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	return &Service{deps: deps, log: log.With("component", "search"), wake: make(chan struct{}, 1)}
}

// Start begins indexing in the background until Close.
func (s *Service) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	if s.deps.Bus != nil {
		sub, err := s.deps.Bus.Subscribe(rooms.NoticeSubject, func(*nats.Msg) { s.Poke() })
		if err != nil {
			cancel()
			return fmt.Errorf("search: subscribe %s: %w", rooms.NoticeSubject, err)
		}
		s.sub = sub
	}
	s.wg.Add(1)
	go s.run(ctx)
	return nil
}

// Close stops the indexer and waits for it.
func (s *Service) Close() {
	if s.sub != nil {
		s.sub.Unsubscribe()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

// Poke wakes the indexer.
func (s *Service) Poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// CaughtUp waits until the indexer has indexed every event committed before the
// call, or ctx ends.
func (s *Service) CaughtUp(ctx context.Context) error {
	end, err := s.deps.Rooms.LatestPosition(ctx)
	if err != nil {
		return err
	}
	for {
		var pos int64
		if err := s.deps.DB.QueryRow(ctx, `SELECT pos FROM search_cursor WHERE name = 'search'`).Scan(&pos); err != nil {
			return fmt.Errorf("search cursor: %w", err)
		}
		if pos >= end {
			return nil
		}
		s.Poke()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Service) run(ctx context.Context) {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for {
			n, err := s.indexOnce(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("index events", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-tick.C:
		}
	}
}

// indexOnce indexes the next batch of events after the cursor, and the next
// batch of backfilled history below the backfill cursor, and returns how many
// it read.
func (s *Service) indexOnce(ctx context.Context) (int, error) {
	n := 0
	err := s.deps.DB.WithTx(ctx, func(tx *storage.Tx) error {
		for _, c := range []struct {
			name string
			read func(context.Context, int64, int) ([]rooms.IndexEvent, error)
		}{
			{"search", s.deps.Rooms.IndexEventsSince},
			{"search_backfill", s.deps.Rooms.IndexBackfillBefore},
		} {
			var cursor int64
			// The no-op update locks the cursor row: one node indexes at a time.
			if err := tx.QueryRow(ctx, `UPDATE search_cursor SET pos = pos WHERE name = $1 RETURNING pos`, c.name).Scan(&cursor); err != nil {
				return fmt.Errorf("lock search cursor %s: %w", c.name, err)
			}
			evs, err := c.read(ctx, cursor, 200)
			if err != nil {
				return err
			}
			n += len(evs)
			if len(evs) == 0 {
				continue
			}
			for _, e := range evs {
				cursor = e.Pos
				if err := index(ctx, tx, e); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE search_cursor SET pos = $1 WHERE name = $2`, cursor, c.name); err != nil {
				return fmt.Errorf("move search cursor %s: %w", c.name, err)
			}
		}
		return nil
	})
	return n, err
}

// index applies one event of the stream to the index: a redaction removes its
// target, a text event is added, anything else (and any event clients never
// see) is skipped.
func index(ctx context.Context, tx *storage.Tx, e rooms.IndexEvent) error {
	if e.Hidden {
		return nil
	}
	if e.Type == "m.room.redaction" {
		target := gjson.Get(e.JSON, "content.redacts").String()
		if target == "" {
			target = gjson.Get(e.JSON, "redacts").String()
		}
		return Remove(ctx, tx, target)
	}
	doc, ok := DocOf(e)
	if !ok {
		return nil
	}
	return Insert(ctx, tx, doc)
}

// Doc is one indexed event.
type Doc struct {
	Pos      int64
	EventID  string
	RoomID   string
	Sender   string
	Key      string // content.body, content.name or content.topic
	OriginTS int64
	Text     string
}

// keyOf names the one field of each indexed event type.
var keyOf = map[string]string{
	"m.room.message": "content.body",
	"m.room.name":    "content.name",
	"m.room.topic":   "content.topic",
}

// DocOf is the index entry for an event of the stream, if it has text to index.
func DocOf(e rooms.IndexEvent) (Doc, bool) {
	key, ok := keyOf[e.Type]
	if !ok {
		return Doc{}, false
	}
	v := gjson.Get(e.JSON, key)
	if v.Type != gjson.String || v.Str == "" {
		return Doc{}, false
	}
	return Doc{Pos: e.Pos, EventID: e.EventID, RoomID: e.RoomID, Sender: e.Sender, Key: key, OriginTS: e.OriginTS, Text: v.Str}, true
}

// Insert adds one event to the index (a no-op if it is there already). It is
// the index writer the indexer uses; benchmarks call it directly.
func Insert(ctx context.Context, tx *storage.Tx, d Doc) error {
	res, err := tx.Exec(ctx, `INSERT INTO search_events (pos, event_id, room_id, sender, key, origin_ts`+
		map[storage.Dialect]string{storage.Postgres: `, vec) VALUES ($1, $2, $3, $4, $5, $6, to_tsvector('english', $7))`, storage.SQLite: `) VALUES ($1, $2, $3, $4, $5, $6)`}[tx.Dialect()]+
		` ON CONFLICT DO NOTHING`, sqlArgs(tx.Dialect(), d)...)
	if err != nil {
		return fmt.Errorf("index event %s: %w", d.EventID, err)
	}
	if tx.Dialect() == storage.SQLite {
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO search_fts (rowid, body) VALUES ($1, $2)`, d.Pos, d.Text); err != nil {
			return fmt.Errorf("index event %s: %w", d.EventID, err)
		}
	}
	return nil
}

func sqlArgs(d storage.Dialect, doc Doc) []any {
	args := []any{doc.Pos, doc.EventID, doc.RoomID, doc.Sender, doc.Key, doc.OriginTS}
	if d == storage.Postgres {
		args = append(args, doc.Text)
	}
	return args
}

// Remove drops an event from the index (a redaction's target).
func Remove(ctx context.Context, tx *storage.Tx, eventID string) error {
	if eventID == "" {
		return nil
	}
	var pos int64
	err := tx.QueryRow(ctx, `DELETE FROM search_events WHERE event_id = $1 RETURNING pos`, eventID).Scan(&pos)
	if err != nil {
		if isNoRows(err) {
			return nil
		}
		return fmt.Errorf("unindex event %s: %w", eventID, err)
	}
	if tx.Dialect() == storage.SQLite {
		if _, err := tx.Exec(ctx, `DELETE FROM search_fts WHERE rowid = $1`, pos); err != nil {
			return fmt.Errorf("unindex event %s: %w", eventID, err)
		}
	}
	return nil
}
