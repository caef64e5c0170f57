package storage

import (
	"strconv"
	"strings"
)

// InList is the placeholders "$1, $2, …" for an IN (…) list of vals, with vals as
// arguments. Callers keep lists to a few hundred values (SQLite's and
// PostgreSQL's parameter limits), batching longer ones.
func InList(vals []string) (string, []any) {
	var b strings.Builder
	args := make([]any, len(vals))
	for i, v := range vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$")
		b.WriteString(strconv.Itoa(i + 1))
		args[i] = v
	}
	return b.String(), args
}
