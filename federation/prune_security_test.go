package federation

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestPruneByAge: rows other servers cause — remembered /send answers, queued
// events for a destination that never answers, expired leases — are deleted once
// older than their retention, and younger ones are kept. The clock is passed in:
// nothing waits.
func TestPruneByAge(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Now()
		ms := func(ago time.Duration) int64 { return now.Add(-ago).UnixMilli() }
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.Exec(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for i, ago := range []time.Duration{25 * time.Hour, 48 * time.Hour, time.Hour, time.Minute} {
			exec(`INSERT INTO federation_txns (origin, txn_id, response, created_ts) VALUES ($1, $2, '{}', $3)`,
				"evil.example", strconv.Itoa(i), ms(ago))
		}
		for _, ago := range []time.Duration{8 * 24 * time.Hour, 6 * 24 * time.Hour} {
			exec(`INSERT INTO federation_queue (destination, kind, json, created_ts) VALUES ('gone.example', 'pdu', '{}', $1)`, ms(ago))
		}
		exec(`INSERT INTO federation_leases (destination, node, until_ts) VALUES ('old.example', 'n', $1), ('new.example', 'n', $2)`,
			ms(2*time.Hour), ms(-time.Minute))

		if err := prune(ctx, db, now); err != nil {
			t.Fatalf("prune() = %v", err)
		}
		// Twice, as two nodes pruning at once would: the second finds nothing to do.
		if err := prune(ctx, db, now); err != nil {
			t.Fatalf("second prune() = %v", err)
		}
		for _, tc := range []struct {
			query string
			want  int
		}{
			{`SELECT COUNT(*) FROM federation_txns`, 2},
			{`SELECT COUNT(*) FROM federation_txns WHERE created_ts < ` + strconv.FormatInt(ms(txnRetention), 10), 0},
			{`SELECT COUNT(*) FROM federation_queue`, 1},
			{`SELECT COUNT(*) FROM federation_leases WHERE destination = 'new.example'`, 1},
			{`SELECT COUNT(*) FROM federation_leases`, 1},
		} {
			var got int
			if err := db.QueryRow(ctx, tc.query).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("after prune, %s = %d; want %d", tc.query, got, tc.want)
			}
		}
	})
}
