package homeserver_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The layering rules, as forbidden import edges between the module's packages.
// Package names are relative to the module; "x/..." is x and every package under
// it. An import inside one package tree (native/sdk importing native) never
// counts. Only the non-test imports are checked: tests may import anything.
// Add a rule here, not a new test, when the layout gains one.

// frontEnds translate a protocol to calls on the core; each is wired by the
// composition root alone.
var frontEnds = []string{"clientapi", "federation", "native", "media/mediahttp"}

// importRule forbids every package matched by from, except those matched by
// except, to import a package matched by to.
type importRule struct {
	name   string
	from   []string
	except []string
	to     []string
	why    string
}

var importRules = []importRule{
	{
		name: "front-ends do not import each other",
		from: frontEnds,
		to:   frontEnds,
		why:  "a rule two front-ends share belongs in the core (homeserver/...) or the media service, where both call it",
	},
	{
		name:   "only the composition root imports an HTTP front-end",
		from:   []string{"..."},
		except: []string{"homeserver", "cmd/..."},
		to:     []string{"clientapi", "federation", "media/mediahttp"},
		why:    "HTTP handlers only translate; other packages use the service behind them (homeserver/..., media)",
	},
	{
		name:   "the core imports no front-end",
		from:   []string{"homeserver/..."},
		except: []string{"homeserver", "homeserver/testserver/..."},
		to:     append([]string{"httpapi"}, frontEnds...),
		why:    "front-ends depend on the core, never the other way; the core asks through an interface it owns",
	},
	{
		name: "the media service imports no front-end",
		from: []string{"media", "media/store", "media/thumbnail"},
		to:   append([]string{"httpapi"}, frontEnds...),
		why:  "federation and native import the media service; its HTTP face is media/mediahttp",
	},
	{
		name: "the HTTP plumbing imports no front-end",
		from: []string{"httpapi"},
		to:   frontEnds,
		why:  "every HTTP front-end builds on httpapi",
	},
}

// match reports whether pkg (relative to the module, "" for its root) is
// matched by pattern.
func match(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, pkg) })
}

// violations lists the edges of imports (package -> its imports, both relative
// to the module) that the rules forbid, one line each.
func violations(rules []importRule, imports map[string][]string) []string {
	var out []string
	for _, pkg := range slices.Sorted(maps.Keys(imports)) {
		for _, r := range rules {
			if !matchAny(r.from, pkg) || matchAny(r.except, pkg) {
				continue
			}
			for _, imp := range imports[pkg] {
				for _, to := range r.to {
					if match(to, imp) && !match(to, pkg) {
						out = append(out, fmt.Sprintf("%s imports %s: %s (%s)", pkg, imp, r.name, r.why))
						break
					}
				}
			}
		}
	}
	return out
}

// moduleImports runs go list over the module and returns each package's
// non-test imports within the module, all relative to the module path.
func moduleImports(t *testing.T) map[string][]string {
	t.Helper()
	// go test puts its own GOROOT/bin first on the PATH, so this is the same go.
	// The goolm tag adds files with imports of their own; list them too.
	cmd := exec.Command("go", "list", "-tags", "goolm", "-json=ImportPath,Imports,Module", "./...")
	cmd.Dir = ".." // the module root; go test runs in the package directory
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type pkg struct {
		ImportPath string
		Imports    []string
		Module     struct{ Path string }
	}
	imports := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		mod := p.Module.Path
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, mod), "/")
		var own []string
		for _, imp := range p.Imports {
			if imp == mod || strings.HasPrefix(imp, mod+"/") {
				own = append(own, strings.TrimPrefix(strings.TrimPrefix(imp, mod), "/"))
			}
		}
		imports[rel] = own
	}
	return imports
}

// TestImportRules checks the module's imports against importRules.
func TestImportRules(t *testing.T) {
	t.Parallel()
	imports := moduleImports(t)
	// A pattern that matches no package is a rule that checks nothing, most
	// likely after a rename: fail so the table is updated with it.
	for _, r := range importRules {
		for _, p := range slices.Concat(r.from, r.except, r.to) {
			if !slices.ContainsFunc(slices.Collect(maps.Keys(imports)), func(pkg string) bool { return match(p, pkg) }) {
				t.Errorf("rule %q: pattern %q matches no package", r.name, p)
			}
		}
	}
	for _, v := range violations(importRules, imports) {
		t.Error(v)
	}
}

// TestImportRulesCatch checks the checker on a hand-built module: the edges the
// rules exist to forbid are reported, and the allowed ones are not.
func TestImportRulesCatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pkg, imports string
		forbidden    bool
	}{
		{"federation", "media/mediahttp", true}, // the edge this split removed
		{"native", "clientapi", true},
		{"clientapi", "federation", true},
		{"homeserver/rooms", "federation", true},
		{"homeserver/users", "httpapi", true},
		{"media", "httpapi", true},
		{"media", "federation", true},
		{"httpapi", "clientapi", true},
		{"bench/loadgen", "media/mediahttp", true},
		{"federation", "media", false},
		{"native", "media", false},
		{"media/mediahttp", "media", false},
		{"media/mediahttp", "httpapi", false},
		{"homeserver", "media/mediahttp", false},
		{"cmd/hongyan", "clientapi", false},
		{"native/sdk", "native", false},
		{"bench/loadgen", "native", false},
		{"homeserver/testserver", "homeserver", false},
	} {
		got := violations(importRules, map[string][]string{tc.pkg: {tc.imports}})
		if (len(got) > 0) != tc.forbidden {
			t.Errorf("violations(%s imports %s) = %q; want forbidden=%v", tc.pkg, tc.imports, got, tc.forbidden)
		}
	}
}
