package appservice

import (
	"context"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestLeaseOneSenderAtATime: of two nodes, one holds a service's lease and
// renews it; the other gets it only once it has run out.
func TestLeaseOneSenderAtATime(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := db.Exec(ctx, `INSERT INTO appservice_state (as_id, pos) VALUES ('irc', 0)`); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for _, c := range []struct {
			node string
			at   time.Time
			want bool
		}{
			{"a", now, true},
			{"b", now.Add(time.Second), false},
			{"a", now.Add(leaseFor / 2), true}, // renewed
			{"b", now.Add(leaseFor), false},    // still a's, thanks to the renewal
			{"b", now.Add(2 * leaseFor), true}, // a went quiet
			{"a", now.Add(2*leaseFor + time.Second), false},
		} {
			got, err := takeLease(ctx, db, "irc", c.node, c.at)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("takeLease(%s at +%v) = %v; want %v", c.node, c.at.Sub(now), got, c.want)
			}
		}
	})
}
