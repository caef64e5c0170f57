package storage

import (
	"context"
	"fmt"
)

// Streams are named counters in the streams table (created by migrations). A write
// takes the next position inside its own transaction: the row lock orders writers of
// a stream by commit, so a reader that sees position N committed has every write up
// to N visible. That is what lets sync tokens be plain positions.

// NextStreamPos takes the next position of the named stream inside the transaction.
func (tx *Tx) NextStreamPos(ctx context.Context, name string, pos *int64) error {
	if err := tx.QueryRow(ctx, `UPDATE streams SET pos = pos + 1 WHERE name = $1 RETURNING pos`, name).Scan(pos); err != nil {
		return fmt.Errorf("next %s position: %w", name, err)
	}
	return nil
}

// NextStreamPositions takes n consecutive positions of the named stream inside the
// transaction and returns the first.
func (tx *Tx) NextStreamPositions(ctx context.Context, name string, n int64) (int64, error) {
	var last int64
	if err := tx.QueryRow(ctx, `UPDATE streams SET pos = pos + $2 WHERE name = $1 RETURNING pos`, name, n).Scan(&last); err != nil {
		return 0, fmt.Errorf("next %d %s positions: %w", n, name, err)
	}
	return last - n + 1, nil
}

// NextStreamPos takes the next position of the named stream on its own, for writes
// that need a unique number but no ordering with other rows.
func (db *DB) NextStreamPos(ctx context.Context, name string, pos *int64) error {
	if err := db.WriteQueryRow(ctx, `UPDATE streams SET pos = pos + 1 WHERE name = $1 RETURNING pos`, name).Scan(pos); err != nil {
		return fmt.Errorf("next %s position: %w", name, err)
	}
	return nil
}

// StreamPos reads the latest committed position of the named stream.
func (db *DB) StreamPos(ctx context.Context, name string, pos *int64) error {
	if err := db.QueryRow(ctx, `SELECT pos FROM streams WHERE name = $1`, name).Scan(pos); err != nil {
		return fmt.Errorf("%s position: %w", name, err)
	}
	return nil
}

// StreamPositions reads the latest committed position of every stream in one query:
// sync needs them all on every wake-up.
func (db *DB) StreamPositions(ctx context.Context) (map[string]int64, error) {
	rows, err := db.Query(ctx, `SELECT name, pos FROM streams`)
	if err != nil {
		return nil, fmt.Errorf("stream positions: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var pos int64
		if err := rows.Scan(&name, &pos); err != nil {
			return nil, err
		}
		out[name] = pos
	}
	return out, rows.Err()
}
