package federation

import (
	"context"
	"fmt"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// Rows kept per other server are pruned by age, so that no server can grow this
// one's tables without bound by talking to it (issue 16):
const (
	// txnRetention is how long a /send answer is remembered for a retry of the
	// same transaction. Senders retry within minutes; Synapse keeps its
	// transaction answers a day.
	txnRetention = 24 * time.Hour
	// queueRetention is how long a PDU or EDU waits for a destination that does
	// not answer. A server back after longer catches up the way one that joins
	// late does, through get_missing_events and backfill; without a bound, a
	// server that joined a busy room and vanished would hold a copy of every
	// event sent there since.
	queueRetention = 7 * 24 * time.Hour
	// leaseRetention is how long an expired destination lease stays: an expired
	// lease is as good as none, so its row only marks a server once sent to.
	leaseRetention = time.Hour
	// pruneEvery is how often each node prunes. Deleting by age is idempotent,
	// so several nodes pruning at once only repeat each other's work.
	pruneEvery = time.Hour
)

// prune deletes the rows that have aged out at now.
func prune(ctx context.Context, db *storage.DB, now time.Time) error {
	for _, p := range []struct {
		table, query string
		keep         time.Duration
	}{
		{"federation_txns", `DELETE FROM federation_txns WHERE created_ts < $1`, txnRetention},
		{"federation_queue", `DELETE FROM federation_queue WHERE created_ts < $1`, queueRetention},
		{"federation_leases", `DELETE FROM federation_leases WHERE until_ts < $1`, leaseRetention},
	} {
		if _, err := db.Exec(ctx, p.query, now.Add(-p.keep).UnixMilli()); err != nil {
			return fmt.Errorf("prune %s: %w", p.table, err)
		}
	}
	return nil
}

// pruneLoop prunes at start and then every pruneEvery until ctx ends.
func (s *Service) pruneLoop(ctx context.Context) {
	tick := time.NewTicker(pruneEvery)
	defer tick.Stop()
	for {
		if err := prune(ctx, s.deps.DB, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("prune federation tables", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
