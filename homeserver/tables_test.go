package homeserver_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Each table has one owning package; other packages go through its API. The room
// engine's tables (those its migrations, 0100–0199, create) are named in SQL only by
// homeserver/rooms; presence and the user directory embed its subqueries
// (rooms.SharedRoomMembersSQL) rather than write their own. tableOwnerAllowed lists
// exceptions as "file table" keys, each with why it stays; the test fails on an entry
// that no longer matches, so the list cannot go stale. It is empty.
var tableOwnerAllowed = map[string]string{}

// roomsTables reads the tables the room engine's migrations create.
func roomsTables(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "migrations", "sqlite", "01[0-9][0-9]_*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("rooms migrations: %v (found %d)", err, len(files))
	}
	create := regexp.MustCompile(`(?i)CREATE TABLE\s+(?:IF NOT EXISTS\s+)?(\w+)`)
	var tables []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range create.FindAllStringSubmatch(string(b), -1) {
			tables = append(tables, m[1])
		}
	}
	slices.Sort(tables)
	return slices.Compact(tables)
}

// sqlNaming returns the tables among tables that the Go source names after a SQL
// keyword in a string literal, as "file table" keys relative to root.
func sqlNaming(t *testing.T, root string, tables []string, skip func(rel string) bool) map[string]int {
	t.Helper()
	re := regexp.MustCompile(`\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+(` + strings.Join(tables, "|") + `)\b`)
	found := map[string]int{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor" || skip(rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") || skip(rel) {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			for _, m := range re.FindAllStringSubmatch(s, -1) {
				found[rel+" "+m[1]]++
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatalf("scan sources: %v", err)
	}
	return found
}

// TestRoomTablesOwned fails when a package other than homeserver/rooms names one of
// the room engine's tables (events, state snapshots, current state, ...) in SQL.
func TestRoomTablesOwned(t *testing.T) {
	root := ".."
	tables := roomsTables(t, root)
	for _, want := range []string{"events", "current_state", "state_snapshots", "state_snapshot_entries"} {
		if !slices.Contains(tables, want) {
			t.Fatalf("rooms migrations create %v; want %q among them", tables, want)
		}
	}
	found := sqlNaming(t, root, tables, func(rel string) bool { return rel == "migrations" })
	ownHits := 0
	for key, n := range found {
		if strings.HasPrefix(key, "homeserver/rooms/") {
			ownHits += n
			delete(found, key)
		}
	}
	if ownHits == 0 {
		// rooms itself names its tables everywhere; finding none means the scan is broken.
		t.Fatal("scan found no SQL naming rooms tables even in homeserver/rooms; want it to")
	}
	var offenders []string
	for key := range found {
		if _, ok := tableOwnerAllowed[key]; !ok {
			offenders = append(offenders, key)
		}
	}
	slices.Sort(offenders)
	for _, o := range offenders {
		t.Errorf("%s: SQL names a homeserver/rooms table outside rooms; add a rooms API and call it", o)
	}
	for key := range tableOwnerAllowed {
		if found[key] == 0 {
			t.Errorf("tableOwnerAllowed[%q] matches nothing; remove the entry", key)
		}
	}
}

// TestRoomTablesOwnedCatches checks the scan itself on a file that names events.
func TestRoomTablesOwnedCatches(t *testing.T) {
	root := t.TempDir()
	for name, body := range map[string]string{
		"migrations/sqlite/0100_rooms.sql": "CREATE TABLE events (x INT);\nCREATE TABLE current_state (x INT);",
		"elsewhere/bad.go":                 "package elsewhere\nconst q = `SELECT x FROM events WHERE y = 1`\n",
		"elsewhere/join.go":                "package elsewhere\nconst q = \"SELECT 1 FROM a JOIN current_state c ON c.x = a.x\"\n",
		"elsewhere/fine.go":                "package elsewhere\nconst q = `SELECT x FROM eventsx`\n// FROM events in a comment\n",
		"homeserver/rooms/own.go":          "package rooms\nconst q = `SELECT x FROM events`\n",
	} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := sqlNaming(t, root, roomsTables(t, root), func(rel string) bool { return rel == "homeserver/rooms" })
	want := map[string]int{"elsewhere/bad.go events": 1, "elsewhere/join.go current_state": 1}
	if len(got) != len(want) || got["elsewhere/bad.go events"] != 1 || got["elsewhere/join.go current_state"] != 1 {
		t.Errorf("sqlNaming = %v; want %v", got, want)
	}
}
