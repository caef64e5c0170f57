// Package storagetest runs a test against every database engine Hongyan supports.
//
// SQLite needs nothing: each test gets a file in t.TempDir. PostgreSQL needs a running
// server named by HONGYAN_TEST_POSTGRES (a postgres:// URL of a role allowed to create
// databases); scripts/test.sh starts a throwaway cluster on loopback and sets it. Each
// test gets a fresh database that is dropped when the test ends. A run without
// HONGYAN_TEST_POSTGRES fails rather than skip, so a green run has always covered both
// engines; set HONGYAN_TEST_DATABASES=sqlite to choose SQLite alone on purpose.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// Engines lists the engines a test run covers: both, unless HONGYAN_TEST_DATABASES
// narrows them.
func Engines() []storage.Dialect {
	switch os.Getenv("HONGYAN_TEST_DATABASES") {
	case "sqlite":
		return []storage.Dialect{storage.SQLite}
	case "postgres":
		return []storage.Dialect{storage.Postgres}
	}
	return []storage.Dialect{storage.SQLite, storage.Postgres}
}

// ForEach runs fn as a subtest once per engine with a fresh, migrated database.
func ForEach(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for _, d := range Engines() {
		t.Run(string(d), func(t *testing.T) {
			dsn := DSN(t, d)
			db, err := storage.Open(context.Background(), dsn, t.TempDir())
			if err != nil {
				t.Fatalf("open %s: %v", d, err)
			}
			t.Cleanup(func() { db.Close() })
			if _, err := db.Migrate(context.Background()); err != nil {
				t.Fatalf("migrate %s: %v", d, err)
			}
			fn(t, db)
		})
	}
}

// DSN returns the connection string of a fresh, empty database of engine d, removed
// when the test ends. For SQLite it is a file in the test's temporary directory.
func DSN(t testing.TB, d storage.Dialect) string {
	t.Helper()
	if d == storage.SQLite {
		return "sqlite:" + t.TempDir() + "/test.db"
	}
	base := os.Getenv("HONGYAN_TEST_POSTGRES")
	if base == "" {
		t.Fatal("HONGYAN_TEST_POSTGRES is not set: run the tests with scripts/test.sh, which starts PostgreSQL, " +
			"or set HONGYAN_TEST_DATABASES=sqlite to test SQLite alone")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open postgres %s: %v", base, err)
	}
	defer admin.Close()
	var b [6]byte
	rand.Read(b[:])
	name := "hongyan_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse HONGYAN_TEST_POSTGRES: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Name returns a short engine label for log lines and benchmark names.
func Name(d storage.Dialect) string { return strings.ToLower(string(d)) }
