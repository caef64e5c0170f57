// Command spec-coverage probes a running homeserver for every endpoint of the Matrix
// client–server and server–server APIs and writes the coverage table.
//
// The endpoint list comes from the npm package @matrix-org/spec, whose releases up to
// 1.10.1 ship TypeScript definitions generated from the spec's OpenAPI files (later
// releases ship only sas-emoji.json). An endpoint is MISSING when the server answers
// 404 or 405 with M_UNRECOGNIZED or without a Matrix error at all; any other answer
// (401 M_MISSING_TOKEN, 400 M_BAD_JSON, 404 M_NOT_FOUND ...) means the route exists.
//
//	go run ./scripts/spec-coverage -spec DIR -hs http://127.0.0.1:8008 [-baseline F] -out F
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
)

// Endpoint is one method on one path of an API.
type Endpoint struct {
	API    string
	Method string
	Path   string
}

func (e Endpoint) key() string { return e.API + " " + e.Method + " " + e.Path }

var (
	pathLine   = regexp.MustCompile(`^  "(/[^"]*)": \{`)
	methodLine = regexp.MustCompile(`^    (get|put|post|delete|patch): operations`)
)

// parseDefinitions reads the paths and methods of one .d.ts file.
func parseDefinitions(r io.Reader, api string) ([]Endpoint, error) {
	var out []Endpoint
	var path string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := pathLine.FindStringSubmatch(line); m != nil {
			// The spec repeats a path with a trailing space for a second variant of
			// the same endpoint (e.g. third-party invites); it is one route.
			path = strings.TrimSpace(m[1])
			continue
		}
		if line == "  };" {
			path = ""
			continue
		}
		if m := methodLine.FindStringSubmatch(line); m != nil && path != "" {
			out = append(out, Endpoint{API: api, Method: strings.ToUpper(m[1]), Path: path})
		}
	}
	return out, sc.Err()
}

var dummies = map[string]string{
	"roomId": "!x:localhost", "userId": "@u:localhost", "eventId": "$e", "roomAlias": "#a:localhost",
	"roomIdOrAlias": "!x:localhost", "serverName": "localhost", "mediaId": "m", "txnId": "t1",
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

var tableRow = regexp.MustCompile(`^\| (\S+) \| (\S+) \| (\S+) \| (COVERED|MISSING) \|$`)

// ReadBaseline reads the covered endpoints of a previous report.
func ReadBaseline(r io.Reader) (map[string]bool, error) {
	covered := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := tableRow.FindStringSubmatch(sc.Text()); m != nil && m[4] == "COVERED" {
			covered[Endpoint{API: m[1], Method: m[2], Path: strings.ReplaceAll(m[3], `\|`, "|")}.key()] = true
		}
	}
	return covered, sc.Err()
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
	specDir := flag.String("spec", "", "directory of the unpacked @matrix-org/spec package")
	hs := flag.String("hs", "http://127.0.0.1:8008", "homeserver base URL (loopback)")
	fed := flag.String("fed", "", "federation listener base URL (loopback, TLS not verified); server-server endpoints are probed there first")
	baselinePath := flag.String("baseline", "", "previous report; fail if an endpoint it covered is missing")
	outPath := flag.String("out", "docs/spec-coverage.md", "report to write")
	flag.Parse()
	if err := run(*specDir, *hs, *fed, *baselinePath, *outPath); err != nil {
		fmt.Fprintln(os.Stderr, "spec-coverage:", err)
		os.Exit(1)
	}
}

func run(specDir, hs, fed, baselinePath, outPath string) error {
	u, err := url.Parse(hs)
	if err != nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" && u.Hostname() != "::1") {
		return fmt.Errorf("-hs must be a loopback URL, got %q", hs)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if data, err := os.ReadFile(filepath.Join(specDir, "package.json")); err == nil {
		json.Unmarshal(data, &pkg)
	}
	var endpoints []Endpoint
	for _, api := range []struct{ name, file string }{{"client-server", "client-server.d.ts"}, {"server-server", "server-server.d.ts"}} {
		f, err := os.Open(filepath.Join(specDir, api.file))
		if err != nil {
			return err
		}
		eps, err := parseDefinitions(f, api.name)
		f.Close()
		if err != nil {
			return err
		}
		if len(eps) == 0 {
			return fmt.Errorf("no endpoints found in %s", api.file)
		}
		endpoints = append(endpoints, eps...)
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
	fmt.Fprintf(&b, "# Matrix spec coverage\n\nGenerated by `scripts/spec-coverage.sh` (run by the test command) from `@matrix-org/spec` %s,\n", pkg.Version)
	fmt.Fprintf(&b, "the newest release of that package that ships the API definitions. An endpoint is MISSING when the\n")
	fmt.Fprintf(&b, "server answers 404/405 with `M_UNRECOGNIZED` or no Matrix error; it is COVERED when the route\n")
	fmt.Fprintf(&b, "exists, which says nothing yet about how completely it is implemented: the tests say that.\n\n")
	fmt.Fprintf(&b, "| API | covered | total |\n|---|---|---|\n")
	for _, api := range []string{"client-server", "server-server"} {
		fmt.Fprintf(&b, "| %s | %d | %d |\n", api, counts[api][0], counts[api][1])
	}
	fmt.Fprintf(&b, "\n| API | method | path | status |\n|---|---|---|---|\n")
	for _, e := range endpoints {
		status := "MISSING"
		if covered[e.key()] {
			status = "COVERED"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", e.API, e.Method, e.Path, status)
	}

	if baselinePath != "" {
		f, err := os.Open(baselinePath)
		if err == nil {
			base, err := ReadBaseline(f)
			f.Close()
			if err != nil {
				return err
			}
			if reg := Regressions(base, covered); len(reg) > 0 {
				return fmt.Errorf("%d endpoint(s) covered before are missing now:\n  %s", len(reg), strings.Join(reg, "\n  "))
			}
		} else if !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.WriteFile(outPath, b.Bytes(), 0o644); err != nil {
		return err
	}
	for _, api := range []string{"client-server", "server-server"} {
		fmt.Printf("%s: %d of %d endpoints covered\n", api, counts[api][0], counts[api][1])
	}
	return nil
}
