package push

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// The evaluator decides which rule of a user's ruleset an event matches (the
// spec's "Push Rules" module, v1.16).
//
// Rules are compiled once per distinct effective ruleset, not per user: a
// condition that names its owner (invite_for_me's state_key, is_user_mention's
// user ID, the legacy contains_user_name pattern) is compiled as "owner" with the
// owner left out, so every user on the server defaults, and every group of users
// with the same changes, share one compiled set. Per event, each distinct set is
// walked once with its owner-free conditions; per user only the few rules left
// undecided (those with an owner or display-name condition, ahead of the first
// rule that matches for everyone) are checked. In a 10 000-member room that
// leaves one walk of the ruleset and 10 000 cheap owner checks per event.

// ownerRef says what of the rule's owner a condition compares against.
type ownerRef uint8

const (
	ownerNone        ownerRef = iota
	ownerUserID               // the pattern or value is the owner's user ID
	ownerLocalpart            // the pattern is the owner's localpart (legacy contains_user_name)
	ownerDisplayName          // contains_display_name: the owner's display name in the room
)

type condKind uint8

const (
	condNever condKind = iota // an unknown or malformed condition: never matches (spec)
	condEventMatch
	condPropertyIs
	condPropertyContains
	condDisplayName
	condMemberCount
	condSenderPermission
)

// cond is one compiled condition.
type cond struct {
	kind  condKind
	path  []string // the event key, split at unescaped dots
	body  bool     // the key is content.body: match whole words, not the whole value
	exact string   // a glob without wildcards, lower-cased: compared without a regexp
	re    *regexp.Regexp
	value any // event_property_is / _contains
	op    string
	n     int64  // room_member_count
	level string // sender_notification_permission's key
	owner ownerRef
}

// crule is one compiled, enabled rule.
type crule struct {
	id        string
	conds     []cond
	actions   []json.RawMessage // without the legacy dont_notify and coalesce
	notify    bool
	highlight bool
	// legacyMention rules (contains_display_name, roomnotif, contains_user_name)
	// do not apply to events with m.mentions (MSC3952, spec v1.7).
	legacyMention bool
	hasOwner      bool
}

// compiled is a ruleset ready to evaluate, shared by every user whose rules are
// the same once their own ID is taken out.
type compiled struct {
	rules []crule
}

// Outcome is what a ruleset says about one event for one user.
type Outcome struct {
	// RuleID is the rule that matched ("" when none did).
	RuleID    string
	Actions   []json.RawMessage
	Notify    bool
	Highlight bool
}

var legacyMentionRules = map[string]bool{".m.rule.contains_display_name": true, ".m.rule.roomnotif": true, ".m.rule.contains_user_name": true}

// compileFor compiles userID's ruleset and returns it with its key: the same key
// for every user whose rules differ only in naming themselves.
func compileFor(rs Ruleset, userID string) (*compiled, string) {
	local := strings.TrimPrefix(strings.SplitN(userID, ":", 2)[0], "@")
	c := &compiled{}
	var key bytes.Buffer
	for _, kind := range Kinds {
		l, _ := rs.list(kind)
		for _, r := range *l {
			if !r.Enabled {
				continue
			}
			cr := crule{id: r.RuleID, legacyMention: r.Default && legacyMentionRules[r.RuleID]}
			switch kind {
			case "override", "underride":
				for _, raw := range r.Conditions {
					cr.conds = append(cr.conds, compileCond(raw, userID))
				}
			case "content":
				pat := r.Pattern
				owner := ownerNone
				if pat == local {
					owner, pat = ownerLocalpart, ""
				}
				cd := globCond([]string{"content", "body"}, pat)
				cd.owner = owner
				cr.conds = []cond{cd}
			case "room":
				cr.conds = []cond{globCond([]string{"room_id"}, r.RuleID)}
			case "sender":
				cd := globCond([]string{"sender"}, r.RuleID)
				if r.RuleID == userID {
					cd.owner, cd.exact = ownerUserID, ""
				}
				cr.conds = []cond{cd}
			}
			cr.actions, cr.notify, cr.highlight = cleanActions(r.Actions)
			for _, cd := range cr.conds {
				cr.hasOwner = cr.hasOwner || cd.owner != ownerNone
			}
			c.rules = append(c.rules, cr)
			// The key: the rule as compiled, owner-free.
			fmt.Fprintf(&key, "%s\x00%s\x00%t\x00", kind, r.RuleID, cr.legacyMention)
			for _, raw := range r.Conditions {
				key.Write(bytes.ReplaceAll(raw, []byte(strconv.Quote(userID)), []byte(`"\u0000owner"`)))
			}
			if r.Pattern != local {
				key.WriteString(r.Pattern)
			}
			for _, a := range cr.actions {
				key.Write(a)
			}
			key.WriteByte('\n')
		}
	}
	return c, key.String()
}

// cleanActions drops the historical actions (dont_notify, coalesce: the spec says
// to ignore them) and reads notify and highlight.
func cleanActions(actions []json.RawMessage) (out []json.RawMessage, notify, highlight bool) {
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			switch s {
			case "notify":
				notify = true
			case "dont_notify", "coalesce":
				continue
			}
			out = append(out, a)
			continue
		}
		var tweak struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &tweak) == nil && tweak.SetTweak == "highlight" {
			v := bytes.TrimSpace(tweak.Value)
			highlight = len(v) == 0 || string(v) == "true"
		}
		out = append(out, a)
	}
	return out, notify, notify && highlight
}

func compileCond(raw json.RawMessage, userID string) cond {
	var c struct {
		Kind    string          `json:"kind"`
		Key     *string         `json:"key"`
		Pattern *string         `json:"pattern"`
		Value   json.RawMessage `json:"value"`
		Is      string          `json:"is"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return cond{kind: condNever}
	}
	switch c.Kind {
	case "event_match":
		if c.Key == nil || c.Pattern == nil {
			return cond{kind: condNever}
		}
		path := splitKey(*c.Key)
		if *c.Pattern == userID {
			cd := cond{kind: condEventMatch, path: path, owner: ownerUserID}
			cd.body = isBody(path)
			return cd
		}
		return globCond(path, *c.Pattern)
	case "event_property_is", "event_property_contains":
		if c.Key == nil || len(c.Value) == 0 {
			return cond{kind: condNever}
		}
		v, ok := decodeScalar(c.Value)
		if !ok {
			return cond{kind: condNever}
		}
		cd := cond{kind: condPropertyIs, path: splitKey(*c.Key), value: v}
		if c.Kind == "event_property_contains" {
			cd.kind = condPropertyContains
		}
		if s, ok := v.(string); ok && s == userID {
			cd.owner, cd.value = ownerUserID, nil
		}
		return cd
	case "contains_display_name":
		return cond{kind: condDisplayName, owner: ownerDisplayName}
	case "room_member_count":
		m := memberCountRE.FindStringSubmatch(c.Is)
		if m == nil {
			return cond{kind: condNever}
		}
		n, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil {
			return cond{kind: condNever}
		}
		op := m[1]
		if op == "" {
			op = "=="
		}
		return cond{kind: condMemberCount, op: op, n: n}
	case "sender_notification_permission":
		if c.Key == nil {
			return cond{kind: condNever}
		}
		return cond{kind: condSenderPermission, level: *c.Key}
	}
	return cond{kind: condNever}
}

var memberCountRE = regexp.MustCompile(`^(==|<=|>=|<|>)?([0-9]+)$`)

func isBody(path []string) bool { return len(path) == 2 && path[0] == "content" && path[1] == "body" }

// globCond compiles an event_match glob: * is any run of characters, ? exactly one,
// matched case-insensitively against the whole value, or for content.body against
// any run of it that starts and ends at a word boundary.
func globCond(path []string, pattern string) cond {
	cd := cond{kind: condEventMatch, path: path, body: isBody(path)}
	if !strings.ContainsAny(pattern, "*?") {
		cd.exact = strings.ToLower(pattern)
		return cd
	}
	var b strings.Builder
	b.WriteString("(?is)")
	if cd.body {
		b.WriteString(`(?:^|\W)`)
	} else {
		b.WriteString(`^`)
	}
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if cd.body {
		b.WriteString(`(?:\W|$)`)
	} else {
		b.WriteString(`$`)
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return cond{kind: condNever}
	}
	cd.re = re
	return cd
}

// splitKey splits an event key at dots; `\.` is a literal dot and `\\` a literal
// backslash (spec v1.16, MSC3873). Any other backslash stands for itself.
func splitKey(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

// decodeScalar reads a condition's value: a string, an integer, a boolean or null.
func decodeScalar(raw json.RawMessage) (any, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, false
	}
	switch x := v.(type) {
	case string, bool, nil:
		return x, true
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	}
	return nil, false
}

// Event is an event prepared for evaluation: decoded once, matched against every
// ruleset of every member.
type Event struct {
	m           map[string]any
	bodyLower   string
	hasBody     bool
	hasMentions bool
	// Sender is the event's sender; RoomID its room.
	Sender, RoomID string
	// ThreadID is the thread root the event belongs to ("" for the main timeline).
	ThreadID string
}

// ParseEvent prepares an event's JSON for evaluation.
func ParseEvent(raw []byte) (*Event, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	ev := &Event{m: m}
	ev.Sender, _ = m["sender"].(string)
	ev.RoomID, _ = m["room_id"].(string)
	if content, ok := m["content"].(map[string]any); ok {
		if body, ok := content["body"].(string); ok {
			ev.bodyLower, ev.hasBody = strings.ToLower(body), true
		}
		_, ev.hasMentions = content["m.mentions"]
		if rel, ok := content["m.relates_to"].(map[string]any); ok && rel["rel_type"] == "m.thread" {
			ev.ThreadID, _ = rel["event_id"].(string)
		}
	}
	return ev, nil
}

// lookup returns the value at path, and whether it exists.
func (ev *Event) lookup(path []string) (any, bool) {
	var cur any = ev.m
	for _, p := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// Room is what conditions need of the room at the event.
type Room struct {
	// MemberCount is the number of joined members.
	MemberCount int
	// SenderPower is the sender's power level; NotificationLevels the
	// power_levels "notifications" levels (a missing key means 50).
	SenderPower        int64
	NotificationLevels map[string]int64
}

// Owner is the user a ruleset belongs to, as conditions see them.
type Owner struct {
	UserID, Localpart string
	// DisplayName is their display name in the room ("" for none).
	DisplayName string

	// The lower-cased localpart and display name, set by prepare: matched
	// against every event's body, they are lowered once, not per event.
	lowerLocal, lowerName string
	prepared              bool
}

// prepare lowers the owner's names once.
func (o *Owner) prepare() {
	if !o.prepared {
		o.lowerLocal, o.lowerName, o.prepared = strings.ToLower(o.Localpart), strings.ToLower(o.DisplayName), true
	}
}

// matchStatic evaluates the owner-free conditions of r: it reports whether they
// all match.
func (r *crule) matchStatic(ev *Event, room *Room) bool {
	if r.legacyMention && ev.hasMentions {
		return false
	}
	for i := range r.conds {
		if cd := &r.conds[i]; cd.owner == ownerNone && !cd.match(ev, room, nil) {
			return false
		}
	}
	return true
}

// matchOwner evaluates r's owner conditions for one owner.
func (r *crule) matchOwner(ev *Event, room *Room, o *Owner) bool {
	for i := range r.conds {
		if cd := &r.conds[i]; cd.owner != ownerNone && !cd.match(ev, room, o) {
			return false
		}
	}
	return true
}

func (cd *cond) match(ev *Event, room *Room, o *Owner) bool {
	switch cd.kind {
	case condEventMatch:
		v, ok := ev.lookup(cd.path)
		s, isStr := v.(string)
		if !ok || !isStr {
			return false
		}
		if cd.body {
			s = ev.bodyLower // content.body, lowered once per event
		}
		switch cd.owner {
		case ownerUserID:
			if cd.body {
				return containsWord(s, strings.ToLower(o.UserID))
			}
			return strings.EqualFold(s, o.UserID)
		case ownerLocalpart:
			o.prepare()
			if cd.body {
				return containsWord(s, o.lowerLocal)
			}
			return strings.EqualFold(s, o.Localpart)
		}
		if cd.re != nil {
			return cd.re.MatchString(s)
		}
		if cd.body {
			return containsWord(s, cd.exact)
		}
		return strings.EqualFold(s, cd.exact)
	case condPropertyIs, condPropertyContains:
		v, ok := ev.lookup(cd.path)
		if !ok {
			return false
		}
		want := cd.value
		if cd.owner == ownerUserID {
			want = o.UserID
		}
		if cd.kind == condPropertyIs {
			return scalarEqual(v, want)
		}
		arr, ok := v.([]any)
		if !ok {
			return false
		}
		for _, x := range arr {
			if scalarEqual(x, want) {
				return true
			}
		}
		return false
	case condDisplayName:
		if o == nil || o.DisplayName == "" || !ev.hasBody {
			return false
		}
		o.prepare()
		return containsWord(ev.bodyLower, o.lowerName)
	case condMemberCount:
		n := int64(room.MemberCount)
		switch cd.op {
		case "==":
			return n == cd.n
		case "<":
			return n < cd.n
		case ">":
			return n > cd.n
		case "<=":
			return n <= cd.n
		case ">=":
			return n >= cd.n
		}
	case condSenderPermission:
		need, ok := room.NotificationLevels[cd.level]
		if !ok {
			need = 50
		}
		return room.SenderPower >= need
	}
	return false
}

// containsWord reports whether needle occurs in s starting and ending at word
// boundaries: the ends of s or a character other than [A-Za-z0-9_] (spec).
func containsWord(s, needle string) bool {
	if needle == "" {
		return false
	}
	for from := 0; from <= len(s)-len(needle); {
		i := strings.Index(s[from:], needle)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(needle)
		if (i == 0 || !isWordByte(s[i-1])) && (end == len(s) || !isWordByte(s[end])) {
			return true
		}
		from = i + 1
	}
	return false
}

func isWordByte(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// scalarEqual compares an event value with a condition value: same type and
// value; integers by value, never a string "1" with a number 1.
func scalarEqual(v, want any) bool {
	switch w := want.(type) {
	case nil:
		return v == nil
	case string:
		s, ok := v.(string)
		return ok && s == w
	case bool:
		b, ok := v.(bool)
		return ok && b == w
	case int64:
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		i, err := n.Int64()
		return err == nil && i == w
	}
	return false
}

// Evaluate runs one user's ruleset on an event (the reference path; the consumer
// evaluates whole rooms with evaluateMany).
func Evaluate(rs Ruleset, ev *Event, room Room, o Owner) Outcome {
	c, _ := compileFor(rs, o.UserID)
	return c.evaluate(ev, &room, &o)
}

func (c *compiled) evaluate(ev *Event, room *Room, o *Owner) Outcome {
	for i := range c.rules {
		r := &c.rules[i]
		if r.matchStatic(ev, room) && (!r.hasOwner || r.matchOwner(ev, room, o)) {
			return r.outcome()
		}
	}
	return Outcome{}
}

func (r *crule) outcome() Outcome {
	return Outcome{RuleID: r.id, Actions: r.actions, Notify: r.notify, Highlight: r.highlight}
}

// target is one user to evaluate an event for.
type target struct {
	owner Owner
	set   *compiled
}

// evaluateMany evaluates an event for many users, walking each distinct compiled
// set once and only the undecided owner rules per user. fn is called for every
// user whose matching rule notifies.
func evaluateMany(ev *Event, room *Room, targets []target, fn func(t *target, o Outcome)) {
	type plan struct {
		pending []*crule // rules with owner conditions whose other conditions match, before decided
		decided *crule   // the first rule that matches for every owner (nil: none)
	}
	plans := map[*compiled]*plan{}
	for i := range targets {
		t := &targets[i]
		p := plans[t.set]
		if p == nil {
			p = &plan{}
			for j := range t.set.rules {
				r := &t.set.rules[j]
				if !r.matchStatic(ev, room) {
					continue
				}
				if !r.hasOwner {
					p.decided = r
					break
				}
				p.pending = append(p.pending, r)
			}
			plans[t.set] = p
		}
		r := p.decided
		for _, pr := range p.pending {
			if pr.matchOwner(ev, room, &t.owner) {
				r = pr
				break
			}
		}
		if r != nil && r.notify {
			fn(t, r.outcome())
		}
	}
}

// senderPower is the sender's power level from the power_levels content (nil:
// none) and the room's creators: in rooms with privileged creators they
// outrank everyone; without power levels a creator has 100.
func senderPower(pl map[string]any, sender string, creators []string, privileged bool) int64 {
	isCreator := false
	for _, c := range creators {
		isCreator = isCreator || c == sender
	}
	if isCreator && privileged {
		return math.MaxInt64
	}
	if pl == nil {
		if isCreator {
			return 100
		}
		return 0
	}
	level := intOf(pl["users_default"], 0)
	if users, ok := pl["users"].(map[string]any); ok {
		if v, ok := users[sender]; ok {
			level = intOf(v, level)
		}
	}
	return level
}

// notificationLevels reads power_levels.notifications.
func notificationLevels(pl map[string]any) map[string]int64 {
	out := map[string]int64{}
	if n, ok := pl["notifications"].(map[string]any); ok {
		for k, v := range n {
			out[k] = intOf(v, 50)
		}
	}
	return out
}

func intOf(v any, def int64) int64 {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if f, err := x.Float64(); err == nil {
			return int64(f)
		}
	case float64:
		return int64(x)
	case string: // older rooms allow levels as strings
		if i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
			return i
		}
	}
	return def
}
