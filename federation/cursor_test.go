package federation

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestCursorMigration: a database from before migration 0504 kept the sender's
// cursor as the streams row 'federation_out'; the migration carries its position
// over to federation_cursor, so the sender neither resends nor skips events, and
// removes the row from the core's streams table.
func TestCursorMigration(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// Back to the schema before 0504, with a cursor at 42.
		for _, q := range []string{
			`DROP TABLE federation_cursor`,
			`DELETE FROM schema_migrations WHERE version = 504`,
			`INSERT INTO streams (name, pos) VALUES ('federation_out', 42)`,
		} {
			if _, err := db.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if n, err := db.Migrate(ctx); err != nil || n != 1 {
			t.Fatalf("Migrate() = %d, %v; want 1 (0504), nil", n, err)
		}
		var pos int64
		if err := db.QueryRow(ctx, `SELECT pos FROM federation_cursor WHERE name = 'federation_out'`).Scan(&pos); err != nil || pos != 42 {
			t.Errorf("federation_cursor after 0504 = %d, %v; want 42", pos, err)
		}
		err := db.QueryRow(ctx, `SELECT pos FROM streams WHERE name = 'federation_out'`).Scan(&pos)
		if !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("streams row federation_out after 0504: pos %d, err %v; want no row", pos, err)
		}
	})
}
