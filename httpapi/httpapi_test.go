package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/ratelimit"
)

func TestEdgeBehaviour(t *testing.T) {
	router := NewRouter()
	api := &API{Limiter: ratelimit.New(1, 2), MaxBodyBytes: 64}
	v3 := Subrouter(router, "/_matrix/client/{version:(?:r0|v3)}")
	api.Handle(v3, http.MethodGet, "/ok", func(*Request) (any, error) { return map[string]int{"n": 1}, nil })
	api.Handle(v3, http.MethodPost, "/ok", func(*Request) (any, error) { return nil, nil })
	api.Handle(v3, http.MethodGet, "/other/{x}", func(*Request) (any, error) { return nil, nil })
	api.Handle(v3, http.MethodGet, "/panic", func(*Request) (any, error) { panic("boom") })
	api.Handle(v3, http.MethodGet, "/fail", func(*Request) (any, error) { return nil, errors.New("disk on fire") })
	api.Handle(v3, http.MethodGet, "/limited", func(*Request) (any, error) { return struct{}{}, nil }, RateLimited)
	api.Handle(v3, http.MethodPost, "/echo", func(r *Request) (any, error) {
		var v map[string]any
		return v, r.Decode(&v)
	})
	h := CORS(router)

	cases := []struct {
		method, path, body string
		wantStatus         int
		wantCode           string
	}{
		{"GET", "/_matrix/client/v3/ok", "", 200, ""},
		{"GET", "/_matrix/client/r0/ok", "", 200, ""},
		{"DELETE", "/_matrix/client/v3/ok", "", 405, "M_UNRECOGNIZED"},
		{"GET", "/_matrix/client/v3/nope", "", 404, "M_UNRECOGNIZED"},
		{"GET", "/_matrix/client/v3/panic", "", 500, "M_UNKNOWN"},
		{"GET", "/_matrix/client/v3/fail", "", 500, "M_UNKNOWN"},
		{"POST", "/_matrix/client/v3/echo", `{"a":`, 400, "M_NOT_JSON"},
		{"POST", "/_matrix/client/v3/echo", `"s"`, 400, "M_BAD_JSON"},
		{"POST", "/_matrix/client/v3/echo", `{"a":"` + strings.Repeat("x", 100) + `"}`, 413, "M_TOO_LARGE"},
		{"OPTIONS", "/_matrix/client/v3/anything", "", 204, ""},
		{"GET", "/_matrix/client/v3/limited", "", 200, ""},
		{"GET", "/_matrix/client/v3/limited", "", 200, ""},
		{"GET", "/_matrix/client/v3/limited", "", 429, "M_LIMIT_EXCEEDED"},
	}
	for _, tc := range cases {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		var body map[string]any
		json.Unmarshal(w.Body.Bytes(), &body)
		code, _ := body["errcode"].(string)
		if w.Code != tc.wantStatus || code != tc.wantCode {
			t.Errorf("%s %s = %d %q; want %d %q", tc.method, tc.path, w.Code, code, tc.wantStatus, tc.wantCode)
		}
		if w.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s %s: no CORS header", tc.method, tc.path)
		}
		if tc.wantCode == "M_LIMIT_EXCEEDED" && body["retry_after_ms"] == nil {
			t.Errorf("429 without retry_after_ms: %v", body)
		}
	}
}
