// Package pusher delivers push notifications to push gateways: it stores each
// user's pushers (/pushers, /pushers/set and the native pushers.get/pushers.set
// ops), walks the notifications stream the rule evaluator (homeserver/push)
// writes, and POSTs every notification to the user's HTTP pushers in the
// Push Gateway API's format (/_matrix/push/v1/notify, as Sygnal expects).
//
// Delivery is durable and per pusher: a scanner moves notifications from the
// stream into pusher_queue with its cursor in one transaction, and one worker per
// pusher with work sends its queue in order, backing off while its gateway is
// down, without holding up any other pusher (deliver.go).
package pusher

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// NotifyPath is the path every HTTP pusher's URL must have (Push Gateway API).
const NotifyPath = "/_matrix/push/v1/notify"

// Limits on what a pusher may carry, from the spec where it names one.
const (
	// MaxPushkeyBytes is the spec's bound on a pushkey.
	MaxPushkeyBytes = 512
	// MaxAppIDChars is the spec's bound on an app ID.
	MaxAppIDChars = 64
	// MaxDataBytes bounds a pusher's data object as JSON: it is sent with every
	// notification.
	MaxDataBytes = 4096
	// MaxNameChars bounds the display names, profile tag and language.
	MaxNameChars = 256
)

// Pusher is one pusher as /pushers lists it.
type Pusher struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	// PushKeyTS is when the pushkey was set, in milliseconds (not listed by
	// /pushers; sent to the gateway in seconds).
	PushKeyTS int64 `json:"-"`
	// DeviceID is the device whose access token set the pusher.
	DeviceID string `json:"-"`

	id       int64
	userID   string
	failing  int64  // failing_since, ms; 0: not failing
	url      string // data.url
	eventIDs bool   // data.format is event_id_only
}

// Set is a /pushers/set request, decoded from its JSON by UnmarshalJSON.
type Set struct {
	PushKey           string
	AppID             string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	// Kind is "http", the one kind served; "" is a request without one.
	Kind string
	// Delete deletes the user's pusher with AppID and PushKey: kind was null.
	Delete bool
	// Data is the pusher's data object as JSON.
	Data json.RawMessage
	// Append keeps other users' pushers with the same app ID and pushkey; by
	// default setting a pusher removes them (a phone that changed hands).
	Append bool
}

// UnmarshalJSON decodes the /pushers/set body, where "kind": null (present, but
// null) means delete and no kind at all is a missing parameter. A field of the
// wrong type is M_BAD_JSON.
func (s *Set) UnmarshalJSON(b []byte) error {
	var w struct {
		PushKey           string          `json:"pushkey"`
		Kind              json.RawMessage `json:"kind"`
		AppID             string          `json:"app_id"`
		AppDisplayName    string          `json:"app_display_name"`
		DeviceDisplayName string          `json:"device_display_name"`
		ProfileTag        string          `json:"profile_tag"`
		Lang              string          `json:"lang"`
		Data              json.RawMessage `json:"data"`
		Append            bool            `json:"append"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return mxerror.New(mxerror.BadJSON, "pusher: %v", err)
	}
	*s = Set{PushKey: w.PushKey, AppID: w.AppID, AppDisplayName: w.AppDisplayName, DeviceDisplayName: w.DeviceDisplayName,
		ProfileTag: w.ProfileTag, Lang: w.Lang, Data: w.Data, Append: w.Append}
	var present map[string]json.RawMessage
	json.Unmarshal(b, &present)
	if _, ok := present["kind"]; ok && string(w.Kind) == "null" {
		s.Delete = true
	} else if len(w.Kind) > 0 {
		if err := json.Unmarshal(w.Kind, &s.Kind); err != nil {
			return mxerror.New(mxerror.BadJSON, "pusher: kind must be a string or null")
		}
	}
	return nil
}

// data is the part of a pusher's data object the server reads.
type data struct {
	URL    string `json:"url"`
	Format string `json:"format"`
}

// List returns the user's pushers.
func (s *Service) List(ctx context.Context, userID string) ([]Pusher, error) {
	ps, err := s.query(ctx, `WHERE user_id = $1 ORDER BY id`, userID)
	if err != nil {
		return nil, fmt.Errorf("pushers of %s: %w", userID, err)
	}
	if ps == nil {
		ps = []Pusher{}
	}
	return ps, nil
}

// Set creates, updates or (Kind nil) deletes one of the user's pushers; deviceID
// is the device of the access token that asked, whose deletion will delete the
// pusher. Bad requests are Matrix errors: M_MISSING_PARAM for a missing field,
// M_INVALID_PARAM for a bad value, M_RESOURCE_LIMIT_EXCEEDED past the per-user
// bound.
func (s *Service) Set(ctx context.Context, userID, deviceID string, req Set) error {
	if req.AppID == "" {
		return mxerror.New(mxerror.MissingParam, "app_id is required")
	}
	if req.PushKey == "" {
		return mxerror.New(mxerror.MissingParam, "pushkey is required")
	}
	if len(req.PushKey) > MaxPushkeyBytes {
		return mxerror.New(mxerror.InvalidParam, "pushkey is longer than %d bytes", MaxPushkeyBytes)
	}
	if len([]rune(req.AppID)) > MaxAppIDChars {
		return mxerror.New(mxerror.InvalidParam, "app_id is longer than %d characters", MaxAppIDChars)
	}
	if req.Delete {
		return s.delete(ctx, `WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, req.AppID, req.PushKey)
	}
	if req.Kind == "" {
		return mxerror.New(mxerror.MissingParam, "kind is required")
	}
	if req.Kind != "http" {
		// Email pushers need the user's email addresses and a mailer, which
		// Hongyan has neither of; refusing beats storing a pusher that never fires.
		return mxerror.New(mxerror.InvalidParam, "pusher kind %q is not supported; only http is", req.Kind)
	}
	for _, f := range []struct{ name, v string }{
		{"app_display_name", req.AppDisplayName}, {"device_display_name", req.DeviceDisplayName}, {"lang", req.Lang},
	} {
		if f.v == "" {
			return mxerror.New(mxerror.MissingParam, "%s is required", f.name)
		}
	}
	for _, f := range []struct{ name, v string }{
		{"app_display_name", req.AppDisplayName}, {"device_display_name", req.DeviceDisplayName}, {"lang", req.Lang}, {"profile_tag", req.ProfileTag},
	} {
		if len([]rune(f.v)) > MaxNameChars {
			return mxerror.New(mxerror.InvalidParam, "%s is longer than %d characters", f.name, MaxNameChars)
		}
	}
	if len(req.Data) == 0 || string(req.Data) == "null" {
		return mxerror.New(mxerror.MissingParam, "data is required")
	}
	if len(req.Data) > MaxDataBytes {
		return mxerror.New(mxerror.InvalidParam, "data is larger than %d bytes", MaxDataBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(req.Data, &obj); err != nil || obj == nil {
		return mxerror.New(mxerror.InvalidParam, "data must be an object")
	}
	var d data
	if err := json.Unmarshal(req.Data, &d); err != nil {
		return mxerror.New(mxerror.InvalidParam, "data.url and data.format must be strings")
	}
	if d.URL == "" {
		return mxerror.New(mxerror.MissingParam, "data.url is required for http pushers")
	}
	if err := s.checkURL(d.URL); err != nil {
		return err
	}
	compact, _ := json.Marshal(obj) // canonical, without the client's whitespace
	now := time.Now().UnixMilli()
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if !req.Append {
			if err := deleteTx(ctx, tx, `WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, req.AppID, req.PushKey, userID); err != nil {
				return err
			}
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM pushers WHERE user_id = $1 AND NOT (app_id = $2 AND pushkey = $3)`,
			userID, req.AppID, req.PushKey).Scan(&n); err != nil {
			return fmt.Errorf("count pushers: %w", err)
		}
		if n >= s.cfg.MaxPushersPerUser {
			return mxerror.New(mxerror.ResourceLimitExceeded, "a user may have at most %d pushers", s.cfg.MaxPushersPerUser)
		}
		// A pusher set again keeps its id (and its queue) and restarts its failure clock.
		_, err := tx.Exec(ctx, `INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name,
			device_display_name, profile_tag, lang, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
			pushkey_ts = excluded.pushkey_ts, app_display_name = excluded.app_display_name,
			device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang,
			data = excluded.data, failing_since = 0`,
			userID, deviceID, req.Kind, req.AppID, req.PushKey, now, req.AppDisplayName, req.DeviceDisplayName, req.ProfileTag,
			req.Lang, string(compact))
		if err != nil {
			return fmt.Errorf("store pusher of %s: %w", userID, err)
		}
		return nil
	})
}

// checkURL accepts an http or https URL with the notify path. A URL that names a
// loopback, private or otherwise non-public address literally (or "localhost")
// is refused at once unless the gateway allow-list admits it; host names are
// judged by the guard when delivery dials, after DNS, so nothing is resolved
// here.
func (s *Service) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return mxerror.New(mxerror.InvalidParam, "data.url must be an http or https URL")
	}
	if u.Path != NotifyPath {
		return mxerror.New(mxerror.InvalidParam, "data.url must have the path %s", NotifyPath)
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		ips = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	}
	if len(ips) == 0 {
		return nil
	}
	// localhost may answer on either family: one admitted is enough.
	for _, ip := range ips {
		if s.guard.Check(ip) == nil {
			return nil
		}
	}
	return mxerror.New(mxerror.InvalidParam, "data.url points at %s, where push gateways may not be reached; see push.gateway_allow_cidrs", host)
}

// DeleteDevices deletes the pushers the user's devices set: the devices were
// deleted (logout, device deletion, a password change, deactivation).
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	for _, d := range deviceIDs {
		if err := s.delete(ctx, `WHERE user_id = $1 AND device_id = $2`, userID, d); err != nil {
			return err
		}
	}
	return nil
}

// delete deletes the pushers matching where, and their queues.
func (s *Service) delete(ctx context.Context, where string, args ...any) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error { return deleteTx(ctx, tx, where, args...) })
}

func deleteTx(ctx context.Context, tx *storage.Tx, where string, args ...any) error {
	if _, err := tx.Exec(ctx, `DELETE FROM pusher_queue WHERE pusher_id IN (SELECT id FROM pushers `+where+`)`, args...); err != nil {
		return fmt.Errorf("delete pusher queue: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM pushers `+where, args...); err != nil {
		return fmt.Errorf("delete pushers: %w", err)
	}
	return nil
}

const pusherColumns = `id, user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name, device_display_name, profile_tag, lang, data, failing_since`

// query reads the pushers matching where.
func (s *Service) query(ctx context.Context, where string, args ...any) ([]Pusher, error) {
	rows, err := s.db.Query(ctx, `SELECT `+pusherColumns+` FROM pushers `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pusher
	for rows.Next() {
		p, err := scanPusher(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// byID reads one pusher; ok is false when it is gone.
func (s *Service) byID(ctx context.Context, id int64) (p Pusher, ok bool, err error) {
	p, err = scanPusher(s.db.QueryRow(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Pusher{}, false, nil
	}
	return p, err == nil, err
}

func scanPusher(row interface{ Scan(...any) error }) (Pusher, error) {
	var p Pusher
	var raw string
	if err := row.Scan(&p.id, &p.userID, &p.DeviceID, &p.Kind, &p.AppID, &p.PushKey, &p.PushKeyTS, &p.AppDisplayName,
		&p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &raw, &p.failing); err != nil {
		return Pusher{}, err
	}
	p.Data = json.RawMessage(raw)
	var d data
	json.Unmarshal(p.Data, &d) // validated when set
	p.url, p.eventIDs = d.URL, d.Format == "event_id_only"
	return p, nil
}
