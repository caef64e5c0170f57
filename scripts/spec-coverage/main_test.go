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
	defs := `export interface paths {
  "/_matrix/client/v3/login": {
    get: operations["getLoginFlows"];
    post: operations["login"];
  };
  "/_matrix/client/v3/sync": {
    get: operations["sync"];
  };
}`
	eps, err := parseDefinitions(strings.NewReader(defs), "client-server")
	if err != nil || len(eps) != 3 {
		t.Fatalf("parseDefinitions = %v, %v; want 3 endpoints", eps, err)
	}
	report := "| client-server | GET | /_matrix/client/v3/sync | COVERED |\n| client-server | POST | /_matrix/client/v3/login | MISSING |\n"
	base, err := ReadBaseline(strings.NewReader(report))
	if err != nil || len(base) != 1 {
		t.Fatalf("ReadBaseline = %v, %v", base, err)
	}
	now := map[string]bool{Endpoint{"client-server", "POST", "/_matrix/client/v3/login"}.key(): true}
	if reg := Regressions(base, now); len(reg) != 1 || !strings.Contains(reg[0], "/sync") {
		t.Errorf("Regressions = %v; want the sync endpoint", reg)
	}
	now[Endpoint{"client-server", "GET", "/_matrix/client/v3/sync"}.key()] = true
	if reg := Regressions(base, now); len(reg) != 0 {
		t.Errorf("Regressions = %v; want none", reg)
	}
}
