package search

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// BenchmarkSearch measures the index's side of a search (count plus one page of
// candidates, ranked or newest first) over a large index written through Insert.
// The visibility filter reads back one page of events whatever the index size,
// so it is left out. HONGYAN_SEARCH_BENCH_DOCS sets the index size (default
// 100 000); the searcher is in 50 of 1 000 rooms.
func BenchmarkSearch(b *testing.B) {
	docs := 100_000
	if v := os.Getenv("HONGYAN_SEARCH_BENCH_DOCS"); v != "" {
		docs, _ = strconv.Atoi(v)
	}
	for _, d := range storagetest.Engines() {
		b.Run(storagetest.Name(d), func(b *testing.B) {
			ctx := context.Background()
			db, err := storage.Open(ctx, storagetest.DSN(b, d), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			fill(ctx, b, db, docs)
			b.Logf("%s: indexed %d messages in %v", d, docs, time.Since(start).Round(time.Millisecond))
			s := New(Deps{DB: db})
			var rooms []string
			for i := 0; i < 1000; i += 20 {
				rooms = append(rooms, roomName(i))
			}
			for _, tc := range []struct {
				name, term string
				recent     bool
			}{
				{"common-rank", "w3", false},
				{"common-recent", "w3", true},
				{"rare-rank", "w4000", false},
				{"two-words-rank", "w10 w200", false},
			} {
				b.Run(tc.name, func(b *testing.B) {
					words := Words(tc.term)
					where, args := s.where(Query{}, words, rooms)
					for b.Loop() {
						if _, err := s.count(ctx, where, args); err != nil {
							b.Fatal(err)
						}
						if _, err := s.candidates(ctx, tc.recent, where, args, 20, 0, 0); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

func roomName(i int) string { return fmt.Sprintf("!room%d:bench", i) }

// fill indexes n messages of ten words each, drawn from 5 000 words with a Zipf
// distribution (w0 most common), spread over 1 000 rooms.
func fill(ctx context.Context, b *testing.B, db *storage.DB, n int) {
	r := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(r, 1.1, 1, 4999)
	const chunk = 5000
	for base := 0; base < n; base += chunk {
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			var sb strings.Builder
			for i := base; i < min(base+chunk, n); i++ {
				sb.Reset()
				for w := 0; w < 10; w++ {
					fmt.Fprintf(&sb, "w%d ", zipf.Uint64())
				}
				if err := Insert(ctx, tx, Doc{Pos: int64(i + 1), EventID: fmt.Sprintf("$e%d", i), RoomID: roomName(r.IntN(1000)),
					Sender: "@u:bench", Key: "content.body", OriginTS: int64(i), Text: sb.String()}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	// A server's autovacuum keeps statistics current; right after a bulk load
	// they are missing and the planner would not use the GIN index.
	if db.Dialect == storage.Postgres {
		if _, err := db.Exec(ctx, `ANALYZE search_events`); err != nil {
			b.Fatal(err)
		}
	}
}
