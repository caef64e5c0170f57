// Package httpapi is the HTTP edge shared by the Matrix front-ends (client API, media,
// later federation): routing, CORS, authentication, body limits, rate limits, JSON
// decoding with the spec's errors, metrics, and turning results and errors into
// responses. Handlers return a value or an error and never write the response
// themselves, which keeps them small and testable.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/ratelimit"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Authenticator resolves access tokens.
type Authenticator interface {
	Authenticate(ctx context.Context, token, ip string) (users.Caller, error)
}

// AppServices resolves application services' as_tokens and whom a service acts
// as (the spec's identity assertion). homeserver/appservice implements it.
type AppServices interface {
	// Identify returns the ID of the service whose as_token token is.
	Identify(token string) (asID string, ok bool)
	// Assert resolves the user (and device) service asID acts as: userID and
	// deviceID are the query's user_id and device_id, empty when absent.
	Assert(ctx context.Context, asID, userID, deviceID string) (users.Caller, error)
	// Unlimited reports whether service asID is exempt from rate limits.
	Unlimited(asID string) bool
}

// API registers handlers with the shared edge behaviour. Fields are set before the
// first Handle and not changed after.
type API struct {
	// Auth resolves access tokens. Required for authenticated routes.
	Auth Authenticator
	// AppServices, if not nil, resolves application services' tokens first.
	AppServices AppServices
	// Limiter limits RateLimited routes per user (or per IP before login). Nil is off.
	Limiter *ratelimit.Limiter
	// MaxBodyBytes bounds request bodies; larger ones get 413 M_TOO_LARGE.
	MaxBodyBytes int64
	// Metrics, if not nil, records request counts and latencies.
	Metrics *Metrics
	// Log receives internal errors. Nil means slog.Default().
	Log *slog.Logger
}

// Request is what a handler sees: the HTTP request, its path variables and, on
// authenticated routes, the caller.
type Request struct {
	*http.Request
	Vars   map[string]string
	Caller users.Caller
	// Authed is true when the request carried a valid access token.
	Authed bool
	IP     string
	api    *API
}

// Handler handles one endpoint. It returns the JSON body of a 200, a *Response for
// another status, an http.Handler to write a non-JSON response itself, or an error:
// a *mxerror.Error (or anything with HTTPStatus and MarshalJSON) is sent as is;
// any other error is logged and becomes 500 M_UNKNOWN.
type Handler func(r *Request) (any, error)

// Response is a JSON response with a status other than 200.
type Response struct {
	Status int
	Body   any
}

// Option changes how a route is served.
type Option func(*route)

type route struct {
	auth   authMode
	guests bool
	// lockedAllowed admits a locked account (logout only).
	lockedAllowed bool
	rateLimited   bool
	bodyLimit     int64
}

type authMode int

const (
	authNone authMode = iota
	authRequired
	authOptional
)

// Authed requires a valid access token of a non-guest account.
func Authed(r *route) { r.auth = authRequired }

// OptionalAuth authenticates the caller when a token is given and lets anonymous
// callers through otherwise.
func OptionalAuth(r *route) { r.auth = authOptional }

// GuestsAllowed lets guest accounts use an authenticated route.
func GuestsAllowed(r *route) { r.guests = true }

// LockedAllowed lets a locked account use an authenticated route; the spec allows
// logging out and nothing else.
func LockedAllowed(r *route) { r.lockedAllowed = true }

// BodyLimit replaces the JSON body limit for a route that streams a larger body
// (media uploads) and enforces its own limit while reading.
func BodyLimit(n int64) Option { return func(r *route) { r.bodyLimit = n } }

// RateLimited applies the per-user / per-IP limiter.
func RateLimited(r *route) { r.rateLimited = true }

// NewRouter returns a router whose unknown paths answer 404 M_UNRECOGNIZED and whose
// known paths with an unsupported method answer 405 M_UNRECOGNIZED, also inside
// subrouters made with Subrouter.
//
// Routes match the escaped path, so a path parameter may hold an encoded slash (secret
// storage key IDs are unpadded base64 and often do); handlers see the unescaped value.
func NewRouter() *mux.Router {
	r := mux.NewRouter().UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// gorilla/mux loses a method mismatch inside a subrouter when a later route's
		// path fails to match, so ask again whether the path serves another method.
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if m == req.Method {
				continue
			}
			probe := req.Clone(req.Context())
			probe.Method = m
			var match mux.RouteMatch
			if r.Match(probe, &match) && match.MatchErr == nil {
				WriteJSON(w, http.StatusMethodNotAllowed, mxerror.New(mxerror.Unrecognized, "method not allowed"))
				return
			}
		}
		WriteJSON(w, http.StatusNotFound, mxerror.New(mxerror.Unrecognized, "unrecognized request"))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusMethodNotAllowed, mxerror.New(mxerror.Unrecognized, "method not allowed"))
	})
	return r
}

// Subrouter returns a subrouter of parent for the path prefix. Paths it does not
// serve fall through to parent's handlers.
func Subrouter(parent *mux.Router, prefix string) *mux.Router {
	return parent.PathPrefix(prefix).Subrouter()
}

// Handle registers h for method and path on router.
func (a *API) Handle(router *mux.Router, method, path string, h Handler, opts ...Option) {
	var rt route
	for _, o := range opts {
		o(&rt)
	}
	router.Handle(path, a.wrap(path, rt, h)).Methods(method)
}

func (a *API) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

func (a *API) wrap(name string, rt route, h Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				a.log().Error("handler panic", "route", name, "panic", p)
				WriteJSON(sw, http.StatusInternalServerError, mxerror.Internal())
			}
			a.Metrics.observe(hr.Method, name, sw.status, time.Since(start))
		}()
		req := &Request{Request: hr, Vars: unescapeVars(mux.Vars(hr)), IP: clientIP(hr), api: a}
		if err := a.authenticate(req, rt); err != nil {
			a.writeError(sw, req, err)
			return
		}
		if rt.rateLimited && !req.Caller.Unlimited && !a.unlimitedService(req) {
			key := req.IP
			if req.Authed {
				key = req.Caller.UserID
			}
			if ok, wait := a.Limiter.Allow(key); !ok {
				a.writeError(sw, req, &mxerror.Error{Code: mxerror.LimitExceeded, Message: "too many requests",
					RetryAfterMs: wait.Milliseconds() + 1})
				return
			}
		}
		limit := a.MaxBodyBytes
		if rt.bodyLimit > 0 {
			limit = rt.bodyLimit
		}
		if hr.Body != nil && limit > 0 {
			hr.Body = http.MaxBytesReader(sw, hr.Body, limit)
		}
		res, err := h(req)
		if err != nil {
			a.writeError(sw, req, err)
			return
		}
		switch v := res.(type) {
		case *Response:
			WriteJSON(sw, v.Status, v.Body)
		case http.Handler:
			v.ServeHTTP(sw, hr)
		default:
			WriteJSON(sw, http.StatusOK, v)
		}
	})
}

func (a *API) authenticate(req *Request, rt route) error {
	if rt.auth == authNone {
		return nil
	}
	token := accessToken(req.Request)
	if token == "" {
		if rt.auth == authOptional {
			return nil
		}
		return mxerror.New(mxerror.MissingToken, "missing access token")
	}
	var c users.Caller
	var err error
	if asID, ok := a.appService(token); ok {
		q := req.URL.Query()
		deviceID := q.Get("device_id")
		if deviceID == "" {
			deviceID = q.Get("org.matrix.msc3202.device_id")
		}
		c, err = a.AppServices.Assert(req.Context(), asID, q.Get("user_id"), deviceID)
	} else {
		c, err = a.Auth.Authenticate(req.Context(), token, req.IP)
	}
	if err != nil {
		return err
	}
	if c.IsGuest && !rt.guests {
		return mxerror.New(mxerror.GuestAccessForbidden, "guest accounts cannot use this endpoint")
	}
	if c.Locked && !rt.lockedAllowed {
		return mxerror.New(mxerror.UserLocked, "this account has been locked")
	}
	req.Caller, req.Authed = c, true
	return nil
}

// unlimitedService reports whether a request that authenticated no caller (on a
// route without auth, registration above all) carries the token of a service
// exempt from rate limits: a bridge creating its users is not slowed by its IP.
func (a *API) unlimitedService(req *Request) bool {
	if req.Authed {
		return false
	}
	asID, ok := a.appService(accessToken(req.Request))
	return ok && a.AppServices.Unlimited(asID)
}

func (a *API) appService(token string) (string, bool) {
	if a.AppServices == nil || token == "" {
		return "", false
	}
	return a.AppServices.Identify(token)
}

// AppService returns the ID of the application service whose as_token the
// request carries, whatever the route's auth: registration and login, whose
// routes take no token, read it here.
func (r *Request) AppService() (string, bool) {
	return r.api.appService(accessToken(r.Request))
}

// accessToken reads the token from the Authorization header, or the deprecated
// access_token query parameter that older clients and Sytest still send.
func accessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// clientIP is the peer address. (X-Forwarded-For is trusted only behind a configured
// proxy, which is not built yet.)
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type statusError interface {
	error
	HTTPStatus() int
}

func (a *API) writeError(w http.ResponseWriter, req *Request, err error) {
	var se statusError
	if errors.As(err, &se) {
		WriteJSON(w, se.HTTPStatus(), se)
		return
	}
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		return // the client went away; there is no one to answer
	}
	a.log().Error("request failed", "method", req.Method, "path", req.URL.Path, "err", err)
	WriteJSON(w, http.StatusInternalServerError, mxerror.Internal())
}

// WriteJSON writes v as a JSON response.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		slog.Error("encode response", "err", err)
		status, body = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// Body reads the whole request body within the size limit.
func (r *Request) Body() ([]byte, error) {
	if r.Request.Body == nil {
		return nil, nil
	}
	data, err := io.ReadAll(r.Request.Body)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, mxerror.New(mxerror.TooLarge, "request body is larger than %d bytes", tooLarge.Limit)
	}
	if err != nil {
		return nil, mxerror.New(mxerror.Unknown, "could not read request body")
	}
	return data, nil
}

// Decode reads the body as a JSON object into v. It answers M_NOT_JSON when the body
// is not JSON, M_BAD_JSON when it is JSON of the wrong shape, M_TOO_LARGE past the
// limit. An empty body decodes as {} for endpoints whose every field is optional.
func (r *Request) Decode(v any) error {
	data, err := r.Body()
	if err != nil {
		return err
	}
	return DecodeJSON(data, v)
}

// DecodeJSON decodes a JSON object with the errors of Decode.
func DecodeJSON(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	// JSON is UTF-8 (RFC 8259); encoding/json would quietly turn invalid bytes
	// into U+FFFD, storing text the client never sent.
	if !utf8.Valid(data) || !json.Valid(data) {
		return mxerror.New(mxerror.NotJSON, "request body is not valid UTF-8 JSON")
	}
	if data[0] != '{' {
		return mxerror.New(mxerror.BadJSON, "request body must be a JSON object")
	}
	if err := json.Unmarshal(data, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return mxerror.New(mxerror.BadJSON, "%s must be of type %s", typeErr.Field, jsonType(typeErr.Type.Kind().String()))
		}
		return mxerror.New(mxerror.BadJSON, "invalid request body: %v", err)
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "map", "struct", "ptr":
		return "object"
	}
	return "number"
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// CORS adds the headers the spec requires so browser clients (Element Web) can call
// the API, and answers preflight requests.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Metrics counts requests and their latency per route.
type Metrics struct {
	requests *prometheus.HistogramVec
}

// NewMetrics registers the request metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hongyan_http_request_duration_seconds",
		Help:    "Time to serve an HTTP API request, by route and status.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"method", "route", "status"})}
	reg.MustRegister(m.requests)
	return m
}

func (m *Metrics) observe(method, route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Observe(d.Seconds())
}

// unescapeVars decodes path parameters matched on the escaped path (see NewRouter).
// net/http has already refused malformed escapes, so decoding cannot fail on a
// request that got this far; a value that does not decode is kept as it came.
func unescapeVars(vars map[string]string) map[string]string {
	for k, v := range vars {
		if u, err := url.PathUnescape(v); err == nil {
			vars[k] = u
		}
	}
	return vars
}
