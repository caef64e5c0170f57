package federation

import (
	"context"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestDestinationLeases: of two nodes, one holds a destination at a time; the other
// takes it when the lease runs out or is released.
func TestDestinationLeases(t *testing.T) {
	t.Parallel()
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, err := storage.Open(ctx, storagetest.DSN(t, d), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			node := func(name string) *sender { return &sender{s: &Service{deps: Deps{DB: db}}, node: name} }
			n1, n2 := node("n1"), node("n2")
			step := func(what string, s *sender, dest string, want bool) {
				t.Helper()
				got, err := s.lease(ctx, dest)
				if err != nil || got != want {
					t.Fatalf("%s: lease = %v, %v; want %v", what, got, err, want)
				}
			}
			step("first node takes it", n1, "a.example", true)
			step("second node is refused", n2, "a.example", false)
			step("first node renews", n1, "a.example", true)
			step("another destination is free", n2, "b.example", true)
			if _, err := db.Exec(ctx, `UPDATE federation_leases SET until_ts = 0 WHERE destination = 'a.example'`); err != nil {
				t.Fatal(err)
			}
			step("an expired lease is taken over", n2, "a.example", true)
			step("and is then the other's", n1, "a.example", false)
			if _, err := db.Exec(ctx, `DELETE FROM federation_leases WHERE node = 'n2'`); err != nil {
				t.Fatal(err)
			}
			step("a released lease is free", n1, "a.example", true)
		})
	}
}
