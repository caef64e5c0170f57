package main

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   bool
	}{
		{200, `{}`, true},
		{401, `{"errcode":"M_MISSING_TOKEN"}`, true},
		{400, `{"errcode":"M_BAD_JSON"}`, true},
		{404, `{"errcode":"M_NOT_FOUND"}`, true},
		{404, `{"errcode":"M_UNRECOGNIZED"}`, false},
		{405, `{"errcode":"M_UNRECOGNIZED"}`, false},
		{404, `404 page not found`, false},
		{405, ``, false},
	}
	for _, c := range cases {
		if got := Classify(c.status, []byte(c.body)); got != c.want {
			t.Errorf("Classify(%d, %q) = %v; want %v", c.status, c.body, got, c.want)
		}
	}
}

func TestParseAndBaseline(t *testing.T) {
	// The shape of the spec's data/api/client-server files: paths relative to the
	// basePath server variable, a path-level parameters list, deprecated flags.
	doc := `openapi: 3.1.0
paths:
  "/v3/login":
    get:
      operationId: getLoginFlows
    post:
      operationId: login
  "/v3/sync":
    parameters:
      - in: query
        name: since
    get:
      operationId: sync
  "/v3/events":
    get:
      deprecated: true
servers:
  - url: "{protocol}://{hostname}{basePath}"
    variables:
      basePath:
        default: /_matrix/client
`
	eps, err := parseOpenAPI([]byte(doc), "client-server")
	if err != nil || len(eps) != 4 {
		t.Fatalf("parseOpenAPI = %v, %v; want 4 endpoints", eps, err)
	}
	byKey := map[string]Endpoint{}
	for _, e := range eps {
		byKey[e.key()] = e
	}
	if e, ok := byKey["client-server GET /_matrix/client/v3/events"]; !ok || !e.Deprecated {
		t.Errorf("events endpoint = %+v, %v; want it, deprecated", e, ok)
	}
	if e, ok := byKey["client-server GET /_matrix/client/v3/sync"]; !ok || e.Deprecated {
		t.Errorf("sync endpoint = %+v, %v; want it, not deprecated", e, ok)
	}
	report := "Spec: v1.19 (commit abc)\n| client-server | GET | /_matrix/client/v3/sync | COVERED |\n| client-server | POST | /_matrix/client/v3/login | MISSING |\n| client-server | GET | /_matrix/client/v3/events | COVERED, deprecated |\n"
	rep, err := ReadReport(strings.NewReader(report))
	if err != nil || len(rep.Endpoints) != 3 || len(rep.Covered) != 2 || rep.Spec != "v1.19 (commit abc)" || !rep.Endpoints[2].Deprecated {
		t.Fatalf("ReadReport = %+v, %v", rep, err)
	}
	now := map[string]bool{Endpoint{API: "client-server", Method: "POST", Path: "/_matrix/client/v3/login"}.key(): true,
		Endpoint{API: "client-server", Method: "GET", Path: "/_matrix/client/v3/events"}.key(): true}
	if reg := Regressions(rep.Covered, now); len(reg) != 1 || !strings.Contains(reg[0], "/sync") {
		t.Errorf("Regressions = %v; want the sync endpoint", reg)
	}
	now[Endpoint{API: "client-server", Method: "GET", Path: "/_matrix/client/v3/sync"}.key()] = true
	if reg := Regressions(rep.Covered, now); len(reg) != 0 {
		t.Errorf("Regressions = %v; want none", reg)
	}
}
