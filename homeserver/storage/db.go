// Package storage opens Hongyan's SQL database, SQLite or PostgreSQL, behind one
// query layer.
//
// Queries are written once in PostgreSQL style with $n placeholders, in the subset of
// SQL both engines accept (ON CONFLICT ... DO UPDATE SET x = excluded.x, BIGINT
// milliseconds, JSON as TEXT, RETURNING). On SQLite the placeholders are rewritten to
// ?n in one place, rewrite. The rare query that must differ is chosen by DB.Dialect
// beside its twin.
//
// SQLite runs in WAL mode with exactly one writer connection: SQLite allows one writer
// at a time, and handing it several connections only turns that into SQLITE_BUSY
// errors and retries. Writers therefore queue on database/sql's pool for the single
// write connection, while reads use a separate pool of read-only connections that WAL
// lets proceed beside the writer.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/hongyan/hongyan/homeserver/config"
)

// Dialect names the SQL engine behind a DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is the database: a write pool and a read pool over one engine. On PostgreSQL
// both are the same pool. DB is safe for concurrent use.
type DB struct {
	Dialect Dialect
	write   *sql.DB
	read    *sql.DB
	// Prepared statements by query text, on SQLite only: modernc's SQLite parses
	// every statement anew, which cost a quarter of a busy server's CPU. pgx caches
	// prepared statements per connection itself.
	writeStmts, readStmts *stmtCache
}

// Open opens the database named by dsn. An empty dsn, or one starting with "sqlite:" or
// "file:", is a SQLite file (by default hongyan.db inside dataDir); "postgres://" and
// "postgresql://" URLs are PostgreSQL. Open does not apply migrations; call Migrate.
func Open(ctx context.Context, dsn, dataDir string) (*DB, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	case dsn == "":
		return openSQLite(ctx, filepath.Join(dataDir, "hongyan.db"))
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//"))
	case strings.HasPrefix(dsn, "file:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "file:"))
	}
	return nil, fmt.Errorf("database url %q: want postgres://, sqlite: or empty for the data directory", redact(dsn))
}

func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	pool.SetMaxOpenConns(4 * runtime.GOMAXPROCS(0))
	pool.SetMaxIdleConns(4 * runtime.GOMAXPROCS(0))
	if err := pool.PingContext(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect postgres %s: %w", redact(dsn), err)
	}
	return &DB{Dialect: Postgres, write: pool, read: pool}, nil
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	// busy_timeout covers the moments a checkpoint or the other pool holds a lock;
	// synchronous=NORMAL is durable in WAL mode across process crashes (only an OS
	// crash can lose the last transactions), which is the trade Synapse and Dendrite
	// make for SQLite too.
	params := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(ON)", "temp_store(MEMORY)"} {
		params.Add("_pragma", p)
	}
	params.Set("_txlock", "immediate")
	// The path is a URI's path: characters that would end it ('?', '#') or start
	// an escape ('%') are percent-encoded so any directory name works.
	base := "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path) + "?"
	write, err := sql.Open("sqlite", base+params.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	params.Add("_pragma", "query_only(ON)")
	read, err := sql.Open("sqlite", base+params.Encode())
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := 2 * runtime.GOMAXPROCS(0)
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	return &DB{Dialect: SQLite, write: write, read: read, writeStmts: newStmtCache(write), readStmts: newStmtCache(read)}, nil
}

// Close closes both pools.
func (db *DB) Close() error {
	db.writeStmts.close()
	db.readStmts.close()
	err := db.write.Close()
	if db.read != db.write {
		err = errors.Join(err, db.read.Close())
	}
	return err
}

// Exec runs a statement that writes.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := db.writeStmts.get(ctx, db.rewrite(query)); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return db.write.ExecContext(ctx, db.rewrite(query), args...)
}

// Query runs a read-only query on the read pool.
func (db *DB) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := db.readStmts.get(ctx, db.rewrite(query)); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return db.read.QueryContext(ctx, db.rewrite(query), args...)
}

// QueryRow runs a read-only query that returns at most one row, on the read pool.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := db.readStmts.get(ctx, db.rewrite(query)); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.read.QueryRowContext(ctx, db.rewrite(query), args...)
}

// WriteQueryRow runs a writing statement that returns one row (INSERT ... RETURNING).
func (db *DB) WriteQueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := db.writeStmts.get(ctx, db.rewrite(query)); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.write.QueryRowContext(ctx, db.rewrite(query), args...)
}

// maxCachedStmts bounds the statement cache: queries built with a variable number of
// placeholders would otherwise grow it without end.
const maxCachedStmts = 2000

// stmtCache prepares each query text once per pool; database/sql then prepares it
// lazily on each connection and keeps it there.
type stmtCache struct {
	pool  *sql.DB
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
}

func newStmtCache(pool *sql.DB) *stmtCache {
	return &stmtCache{pool: pool, stmts: map[string]*sql.Stmt{}}
}

// get returns the prepared statement for query, or nil when the cache is off, full,
// or the query fails to prepare (the caller then runs it unprepared and gets the
// error from there).
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	st := c.stmts[query]
	full := len(c.stmts) >= maxCachedStmts
	c.mu.RUnlock()
	if st != nil || full {
		return st
	}
	st, err := c.pool.PrepareContext(context.WithoutCancel(ctx), query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev := c.stmts[query]; prev != nil {
		st.Close()
		return prev
	}
	c.stmts[query] = st
	return st
}

// peek returns the statement for query if it is prepared already.
func (c *stmtCache) peek(query string) *sql.Stmt {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.stmts[query]
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.stmts {
		st.Close()
	}
	c.stmts = map[string]*sql.Stmt{}
}

// Tx is one transaction on the write connection. Its methods take the same
// PostgreSQL-style queries as DB's.
type Tx struct {
	tx *sql.Tx
	db *DB
	// unprepared are queries the statement cache lacked. They cannot be prepared
	// during the transaction (on SQLite it holds the only write connection), so
	// they are prepared after it ends.
	unprepared []string
}

// stmt returns the cached statement for query, noting it for preparation after the
// transaction if there is none yet.
func (tx *Tx) stmt(query string) *sql.Stmt {
	if tx.db.writeStmts == nil {
		return nil
	}
	q := tx.db.rewrite(query)
	st := tx.db.writeStmts.peek(q)
	if st == nil {
		tx.unprepared = append(tx.unprepared, q)
	}
	return st
}

// Exec runs a statement inside the transaction.
func (tx *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := tx.stmt(query); st != nil {
		return tx.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.tx.ExecContext(ctx, tx.db.rewrite(query), args...)
}

// Query runs a query inside the transaction.
func (tx *Tx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := tx.stmt(query); st != nil {
		return tx.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return tx.tx.QueryContext(ctx, tx.db.rewrite(query), args...)
}

// QueryRow runs a query returning at most one row inside the transaction.
func (tx *Tx) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := tx.stmt(query); st != nil {
		return tx.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return tx.tx.QueryRowContext(ctx, tx.db.rewrite(query), args...)
}

// Dialect reports the engine the transaction runs on.
func (tx *Tx) Dialect() Dialect { return tx.db.Dialect }

// WithTx runs fn in a write transaction and commits it if fn returns nil; otherwise
// it rolls back and returns fn's error. On SQLite the transaction begins IMMEDIATE,
// so it holds the write lock from the start and cannot fail to upgrade later.
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	tx := &Tx{tx: sqlTx, db: db}
	defer func() {
		for _, q := range tx.unprepared {
			db.writeStmts.get(ctx, q)
		}
	}()
	if err := fn(tx); err != nil {
		_ = sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// rewrite turns $n placeholders into SQLite's ?n outside string literals. PostgreSQL
// queries pass through untouched.
func (db *DB) rewrite(query string) string {
	if db.Dialect != SQLite || !strings.Contains(query, "$") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query))
	inString := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			inString = !inString
		case c == '$' && !inString && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9':
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// IsUniqueViolation reports whether err is a unique or primary key constraint
// violation on either engine.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		code := sqliteErr.Code()
		return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// redact hides the password in a database URL (in its user part or its query)
// for logs and errors.
func redact(dsn string) string {
	return config.RedactValue("url", dsn)
}
