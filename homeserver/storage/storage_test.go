package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

func TestMigrationFoldersMatch(t *testing.T) {
	pg, err := storage.Migrations(storage.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	lite, err := storage.Migrations(storage.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if len(pg) == 0 {
		t.Fatal("no migrations found")
	}
	if len(pg) != len(lite) {
		t.Fatalf("postgres has %d migrations, sqlite %d; want the same versions in both", len(pg), len(lite))
	}
	for i := range pg {
		if pg[i].Version != lite[i].Version || pg[i].Name != lite[i].Name {
			t.Errorf("migration %d: postgres %04d_%s, sqlite %04d_%s", i, pg[i].Version, pg[i].Name, lite[i].Version, lite[i].Name)
		}
	}
}

func TestMigrateAppliesOnceOnBothEngines(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		want, _ := storage.Migrations(db.Dialect)
		applied, err := db.AppliedVersions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range want {
			if !applied[m.Version] {
				t.Errorf("migration %04d_%s not recorded as applied", m.Version, m.Name)
			}
		}
		n, err := db.Migrate(ctx)
		if err != nil || n != 0 {
			t.Fatalf("second Migrate() = %d, %v; want 0, nil", n, err)
		}
	})
}

func TestQueriesAndTransactions(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := db.Exec(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL, note TEXT)`); err != nil {
			t.Fatal(err)
		}
		// A '$1' inside a string literal must survive the placeholder rewrite.
		if _, err := db.Exec(ctx, `INSERT INTO kv (k, v, note) VALUES ($2, $1, 'costs $1')`, 7, "a"); err != nil {
			t.Fatal(err)
		}
		var v int
		var note string
		if err := db.QueryRow(ctx, `SELECT v, note FROM kv WHERE k = $1`, "a").Scan(&v, &note); err != nil || v != 7 || note != "costs $1" {
			t.Fatalf("select = %d, %q, %v; want 7, \"costs $1\", nil", v, note, err)
		}
		_, err := db.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, $2)`, "a", 8)
		if !storage.IsUniqueViolation(err) {
			t.Fatalf("duplicate insert error = %v; want a unique violation", err)
		}

		rollback := errors.New("roll back")
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE kv SET v = v + 1 WHERE k = $1`, "a"); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatalf("WithTx() = %v; want %v", err, rollback)
		}
		err = db.WithTx(ctx, func(tx *storage.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v`, "a", 9)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(ctx, `SELECT v FROM kv WHERE k = $1`, "a").Scan(&v); err != nil || v != 9 {
			t.Fatalf("after upsert v = %d, %v; want 9", v, err)
		}
	})
}

// A data directory may hold characters that end or escape a URI's path; the SQLite
// file must still land at that path (Go names parallel subtests "name#01").
func TestSQLitePathWithURICharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a#01?b%20c")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(context.Background(), "sqlite:"+dir+"/hongyan.db", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(filepath.Join(dir, "hongyan.db")); err != nil {
		t.Errorf("database not at its path: %v", err)
	}
}
