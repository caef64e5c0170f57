// Command spec-coverage probes a running homeserver for every endpoint of the Matrix
// client–server and server–server APIs and writes the coverage table.
//
// The endpoint list comes from the OpenAPI definitions in the spec's own repository
// (matrix-org/matrix-spec, data/api/), checked out at a release tag by whoever
// regenerates the table; nothing of it is committed. The npm package @matrix-org/spec
// stopped shipping the definitions after 1.10.1, so it cannot measure the current spec.
// Without a checkout (CI cannot reach GitHub) the tool re-probes every row of the
// committed table, which is how the test command catches a route that disappeared.
//
// An endpoint is MISSING when the server answers 404 or 405 with M_UNRECOGNIZED or
// without a Matrix error at all; any other answer (401 M_MISSING_TOKEN, 400
// M_BAD_JSON, 404 M_NOT_FOUND ...) means the route exists.
//
//	go run ./scripts/spec-coverage -spec-repo DIR -spec-version v1.19 -hs http://127.0.0.1:8008 -out F
//	go run ./scripts/spec-coverage -baseline F -hs http://127.0.0.1:8008 -out F
//
// With -baseline, it exits 1 when an endpoint covered in the baseline is missing now.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Endpoint is one method on one path of an API.
type Endpoint struct {
	API    string
	Method string
	Path   string
	// Deprecated is true when the spec marks the operation deprecated.
	Deprecated bool
}

func (e Endpoint) key() string { return e.API + " " + e.Method + " " + e.Path }

// openAPI is the part of an OpenAPI 3 document the probe needs.
type openAPI struct {
	Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	Servers []struct {
		Variables map[string]struct {
			Default string `yaml:"default"`
		} `yaml:"variables"`
	} `yaml:"servers"`
}

// parseOpenAPI reads the endpoints of one of the spec's API files. Its paths are
// relative to the basePath server variable (e.g. /_matrix/client), so the full
// path is the two joined.
func parseOpenAPI(data []byte, api string) ([]Endpoint, error) {
	var doc openAPI
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	base := ""
	if len(doc.Servers) > 0 {
		base = doc.Servers[0].Variables["basePath"].Default
	}
	var out []Endpoint
	for path, ops := range doc.Paths {
		for method, op := range ops {
			switch method {
			case "get", "put", "post", "delete", "patch":
			default:
				continue // parameters, summary …
			}
			var flags struct {
				Deprecated bool `yaml:"deprecated"`
			}
			if err := op.Decode(&flags); err != nil {
				return nil, fmt.Errorf("%s %s: %w", method, path, err)
			}
			out = append(out, Endpoint{API: api, Method: strings.ToUpper(method), Path: base + strings.TrimSpace(path), Deprecated: flags.Deprecated})
		}
	}
	return out, nil
}

// specEndpoints reads every client–server and server–server endpoint of a
// matrix-spec checkout.
func specEndpoints(repo string) ([]Endpoint, error) {
	var all []Endpoint
	for _, api := range []string{"client-server", "server-server"} {
		files, err := filepath.Glob(filepath.Join(repo, "data", "api", api, "*.yaml"))
		if err != nil {
			return nil, err
		}
		n := len(all)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			eps, err := parseOpenAPI(data, api)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			all = append(all, eps...)
		}
		if len(all) == n {
			return nil, fmt.Errorf("no %s endpoints under %s", api, repo)
		}
	}
	return all, nil
}

var dummies = map[string]string{
	"roomId": "!x:localhost", "userId": "@u:localhost", "eventId": "$e", "roomAlias": "#a:localhost",
	"roomIdOrAlias": "!x:localhost", "serverName": "localhost", "mediaId": "m", "txnId": "t1",
	"queryType": "profile", "keyName": "displayname",
}

var param = regexp.MustCompile(`\{([^}]+)\}`)

// fill replaces path parameters with plausible values.
func fill(path string) string {
	return param.ReplaceAllStringFunc(path, func(p string) string {
		name := p[1 : len(p)-1]
		v, ok := dummies[name]
		if !ok {
			v = "x"
		}
		return url.PathEscape(v)
	})
}

// Classify says whether an answer shows the endpoint exists.
func Classify(status int, body []byte) bool {
	if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
		return true
	}
	var e struct {
		ErrCode string `json:"errcode"`
	}
	if json.Unmarshal(body, &e) != nil || e.ErrCode == "" || e.ErrCode == "M_UNRECOGNIZED" {
		return false
	}
	return true
}

func probe(client *http.Client, hs string, e Endpoint) (bool, error) {
	var body io.Reader
	if e.Method == "POST" || e.Method == "PUT" || e.Method == "PATCH" {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(e.Method, hs+fill(e.Path), body)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return Classify(resp.StatusCode, data), nil
}

var (
	tableRow = regexp.MustCompile(`^\| (\S+) \| (\S+) \| (\S+) \| (COVERED|MISSING)(, deprecated)? \|$`)
	specLine = regexp.MustCompile(`^Spec: (.+)$`)
)

// Report is a coverage table read back: the spec it measured, its endpoints, and
// which of them were covered.
type Report struct {
	Spec      string
	Endpoints []Endpoint
	Covered   map[string]bool
}

// ReadReport reads a previous report.
func ReadReport(r io.Reader) (Report, error) {
	rep := Report{Covered: map[string]bool{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := specLine.FindStringSubmatch(sc.Text()); m != nil {
			rep.Spec = m[1]
		}
		if m := tableRow.FindStringSubmatch(sc.Text()); m != nil {
			e := Endpoint{API: m[1], Method: m[2], Path: m[3], Deprecated: m[5] != ""}
			rep.Endpoints = append(rep.Endpoints, e)
			if m[4] == "COVERED" {
				rep.Covered[e.key()] = true
			}
		}
	}
	return rep, sc.Err()
}

// Regressions lists the endpoints covered in the baseline that are missing now.
func Regressions(baseline map[string]bool, now map[string]bool) []string {
	var out []string
	for k := range baseline {
		if !now[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func main() {
	specRepo := flag.String("spec-repo", "", "matrix-spec checkout to read the endpoints from (data/api); without it, the rows of -baseline are probed again")
	specVersion := flag.String("spec-version", "", "what the checkout is, for the report (e.g. \"v1.19 (commit …)\")")
	hs := flag.String("hs", "http://127.0.0.1:8008", "homeserver base URL (loopback)")
	fed := flag.String("fed", "", "federation listener base URL (loopback, TLS not verified); server-server endpoints are probed there first")
	baselinePath := flag.String("baseline", "", "previous report; fail if an endpoint it covered is missing")
	outPath := flag.String("out", "docs/spec-coverage.md", "report to write")
	flag.Parse()
	if err := run(*specRepo, *specVersion, *hs, *fed, *baselinePath, *outPath); err != nil {
		fmt.Fprintln(os.Stderr, "spec-coverage:", err)
		os.Exit(1)
	}
}

func run(specRepo, specVersion, hs, fed, baselinePath, outPath string) error {
	u, err := url.Parse(hs)
	if err != nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" && u.Hostname() != "::1") {
		return fmt.Errorf("-hs must be a loopback URL, got %q", hs)
	}
	var base Report
	if baselinePath != "" {
		f, err := os.Open(baselinePath)
		if err == nil {
			base, err = ReadReport(f)
			f.Close()
			if err != nil {
				return err
			}
		} else if !os.IsNotExist(err) {
			return err
		}
	}
	var endpoints []Endpoint
	if specRepo != "" {
		if endpoints, err = specEndpoints(specRepo); err != nil {
			return err
		}
	} else {
		if len(base.Endpoints) == 0 {
			return fmt.Errorf("neither -spec-repo nor a -baseline report with endpoints")
		}
		endpoints, specVersion = base.Endpoints, base.Spec
	}
	seen := map[string]bool{}
	unique := endpoints[:0]
	for _, e := range endpoints {
		if !seen[e.key()] {
			seen[e.key()] = true
			unique = append(unique, e)
		}
	}
	endpoints = unique
	sort.Slice(endpoints, func(i, j int) bool {
		a, b := endpoints[i], endpoints[j]
		if a.API != b.API {
			return a.API < b.API
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Method < b.Method
	})
	client := &http.Client{Timeout: 5 * time.Second,
		// The federation listener's certificate is self-signed on a test machine.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	covered := map[string]bool{}
	counts := map[string][2]int{}
	for _, e := range endpoints {
		ok := false
		if e.API == "server-server" && fed != "" {
			if ok, err = probe(client, strings.TrimSuffix(fed, "/"), e); err != nil {
				return fmt.Errorf("probe %s %s: %w", e.Method, e.Path, err)
			}
		}
		if !ok {
			if ok, err = probe(client, strings.TrimSuffix(hs, "/"), e); err != nil {
				return fmt.Errorf("probe %s %s: %w", e.Method, e.Path, err)
			}
		}
		c := counts[e.API]
		c[1]++
		if ok {
			c[0]++
			covered[e.key()] = true
		}
		counts[e.API] = c
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "# Matrix spec coverage\n\nGenerated by `scripts/spec-coverage.sh` from the OpenAPI definitions in the spec's own\n")
	fmt.Fprintf(&b, "repository (matrix-org/matrix-spec, `data/api/`), which the script reads from a checkout given in\n")
	fmt.Fprintf(&b, "`SPEC_REPO`; the test command, which has no checkout, probes every row below again and fails when\n")
	fmt.Fprintf(&b, "a COVERED one went missing. An endpoint is MISSING when the server answers 404/405 with\n")
	fmt.Fprintf(&b, "`M_UNRECOGNIZED` or no Matrix error; it is COVERED when the route exists, which says nothing yet\n")
	fmt.Fprintf(&b, "about how completely it is implemented: the tests say that.\n\n")
	fmt.Fprintf(&b, "Spec: %s\n\n", specVersion)
	fmt.Fprintf(&b, "| API | covered | total | missing, not deprecated |\n|---|---|---|---|\n")
	for _, api := range []string{"client-server", "server-server"} {
		live := 0
		for _, e := range endpoints {
			if e.API == api && !e.Deprecated && !covered[e.key()] {
				live++
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", api, counts[api][0], counts[api][1], live)
	}
	fmt.Fprintf(&b, "\n| API | method | path | status |\n|---|---|---|---|\n")
	for _, e := range endpoints {
		status := "MISSING"
		if covered[e.key()] {
			status = "COVERED"
		}
		if e.Deprecated {
			status += ", deprecated"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", e.API, e.Method, e.Path, status)
	}
	// Only what the measured spec still lists can regress: an endpoint a newer
	// spec dropped is no longer asked for.
	for k := range base.Covered {
		if !seen[k] {
			delete(base.Covered, k)
		}
	}
	if reg := Regressions(base.Covered, covered); len(reg) > 0 {
		return fmt.Errorf("%d endpoint(s) covered before are missing now:\n  %s", len(reg), strings.Join(reg, "\n  "))
	}
	if err := os.WriteFile(outPath, b.Bytes(), 0o644); err != nil {
		return err
	}
	for _, api := range []string{"client-server", "server-server"} {
		fmt.Printf("%s: %d of %d endpoints covered\n", api, counts[api][0], counts[api][1])
	}
	return nil
}
