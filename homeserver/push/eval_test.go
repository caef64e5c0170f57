package push

import (
	"encoding/json"
	"fmt"
	"testing"
)

const (
	alice = "@alice:example.org"
	bob   = "@bob:example.org"
)

func mustEvent(t testing.TB, raw string) *Event {
	t.Helper()
	ev, err := ParseEvent([]byte(raw))
	if err != nil {
		t.Fatalf("ParseEvent(%s): %v", raw, err)
	}
	return ev
}

func msg(body string, extra string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf(`{"type":"m.room.message","sender":%q,"room_id":"!r:example.org","content":{"msgtype":"m.text","body":%q%s}}`, bob, body, extra)
}

// TestDefaultRules runs the spec's default ruleset on the events its
// predefined rules are about, for alice ("Alice A." in the room).
func TestDefaultRules(t *testing.T) {
	group := Room{MemberCount: 5, SenderPower: 0}
	dm := Room{MemberCount: 2}
	mod := Room{MemberCount: 5, SenderPower: 50}
	owner := Owner{UserID: alice, Localpart: "alice", DisplayName: "Alice A."}
	cases := []struct {
		name      string
		event     string
		room      Room
		rule      string
		notify    bool
		highlight bool
	}{
		{"group message", msg("hi all", ""), group, ".m.rule.message", true, false},
		{"one-to-one message", msg("hi", ""), dm, ".m.rule.room_one_to_one", true, false},
		{"notice", `{"type":"m.room.message","sender":"@bot:x","content":{"msgtype":"m.notice","body":"alice"}}`, dm, ".m.rule.suppress_notices", false, false},
		{"intentional mention", msg("hey", `"m.mentions":{"user_ids":["@alice:example.org"]}`), group, ".m.rule.is_user_mention", true, true},
		{"mention of someone else", msg("hey", `"m.mentions":{"user_ids":["@carol:example.org"]}`), group, ".m.rule.message", true, false},
		{"m.mentions turns legacy display name off", msg("Alice A. look", `"m.mentions":{}`), group, ".m.rule.message", true, false},
		{"legacy display name", msg("hello alice a., look", ""), group, ".m.rule.contains_display_name", true, true},
		{"display name inside a word", msg("xAlice A.y", ""), group, ".m.rule.message", true, false},
		{"legacy user name", msg("is ALICE here?", ""), group, ".m.rule.contains_user_name", true, true},
		{"user name inside a word", msg("malice", ""), group, ".m.rule.message", true, false},
		{"room mention by a moderator", msg("hi", `"m.mentions":{"room":true}`), mod, ".m.rule.is_room_mention", true, true},
		{"room mention without permission", msg("hi", `"m.mentions":{"room":true}`), group, ".m.rule.message", true, false},
		{"room mention as a string is not true", msg("hi", `"m.mentions":{"room":"true"}`), mod, ".m.rule.message", true, false},
		{"legacy @room by a moderator", msg("@room meeting", ""), mod, ".m.rule.roomnotif", true, true},
		{"legacy @room inside a word", msg("x@room", ""), mod, ".m.rule.message", true, false},
		{"invite for me", `{"type":"m.room.member","state_key":"@alice:example.org","sender":"@bob:example.org","content":{"membership":"invite"}}`, group, ".m.rule.invite_for_me", true, false},
		{"invite for someone else", `{"type":"m.room.member","state_key":"@carol:example.org","sender":"@bob:example.org","content":{"membership":"invite"}}`, group, ".m.rule.member_event", false, false},
		{"tombstone", `{"type":"m.room.tombstone","state_key":"","sender":"@bob:example.org","content":{"replacement_room":"!n:x"}}`, group, ".m.rule.tombstone", true, true},
		{"tombstone with a state key", `{"type":"m.room.tombstone","state_key":"x","sender":"@bob:example.org","content":{}}`, group, "", false, false},
		{"reaction", `{"type":"m.reaction","sender":"@bob:example.org","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍"}}}`, dm, ".m.rule.reaction", false, false},
		{"server acl", `{"type":"m.room.server_acl","state_key":"","sender":"@bob:example.org","content":{}}`, group, ".m.rule.room.server_acl", false, false},
		{"edit", msg("* fixed", `"m.relates_to":{"rel_type":"m.replace","event_id":"$e"},"m.new_content":{"body":"fixed"}`), dm, ".m.rule.suppress_edits", false, false},
		{"call invite", `{"type":"m.call.invite","sender":"@bob:example.org","content":{"call_id":"c"}}`, group, ".m.rule.call", true, false},
		{"encrypted in a DM", `{"type":"m.room.encrypted","sender":"@bob:example.org","content":{"ciphertext":"x"}}`, dm, ".m.rule.encrypted_room_one_to_one", true, false},
		{"encrypted in a group", `{"type":"m.room.encrypted","sender":"@bob:example.org","content":{"ciphertext":"x"}}`, group, ".m.rule.encrypted", true, false},
		{"other event type", `{"type":"m.room.topic","state_key":"","sender":"@bob:example.org","content":{"topic":"alice"}}`, group, "", false, false},
	}
	rs := Defaults(alice)
	for _, c := range cases {
		got := Evaluate(rs, mustEvent(t, c.event), c.room, owner)
		if got.RuleID != c.rule || got.Notify != c.notify || got.Highlight != c.highlight {
			t.Errorf("%s: Evaluate = rule %q notify %t highlight %t; want %q %t %t", c.name, got.RuleID, got.Notify, got.Highlight, c.rule, c.notify, c.highlight)
		}
	}
}

// TestConditions covers each condition kind on its own.
func TestConditions(t *testing.T) {
	ev := `{"type":"m.room.message","sender":"@bob:example.org","room_id":"!r:example.org","state_key":"",
		"content":{"body":"The Quick brown fox","msgtype":"m.text","n":42,"flag":true,"nothing":null,"f":"42",
		"m.dotted":{"key":"v"},"a.b":{"c":"escaped"},"back\\slash":"bs","list":["x",7,true,null],"obj":{"inner":{"deep":"yes"}}}}`
	room := Room{MemberCount: 10, SenderPower: 50, NotificationLevels: map[string]int64{"room": 100, "custom": 20}}
	cases := []struct {
		cond string
		want bool
	}{
		// event_match: whole value, case-insensitive globs.
		{`{"kind":"event_match","key":"type","pattern":"m.room.message"}`, true},
		{`{"kind":"event_match","key":"type","pattern":"M.ROOM.MESSAGE"}`, true},
		{`{"kind":"event_match","key":"type","pattern":"m.room"}`, false},
		{`{"kind":"event_match","key":"type","pattern":"m.room.*"}`, true},
		{`{"kind":"event_match","key":"type","pattern":"m.room.messag?"}`, true},
		{`{"kind":"event_match","key":"type","pattern":"m.room.messa?"}`, false},
		{`{"kind":"event_match","key":"type","pattern":"*"}`, true},
		{`{"kind":"event_match","key":"room_id","pattern":"!r:example.org"}`, true},
		{`{"kind":"event_match","key":"state_key","pattern":""}`, true},
		// content.body: whole words anywhere.
		{`{"kind":"event_match","key":"content.body","pattern":"quick"}`, true},
		{`{"kind":"event_match","key":"content.body","pattern":"qui"}`, false},
		{`{"kind":"event_match","key":"content.body","pattern":"qui*"}`, true},
		{`{"kind":"event_match","key":"content.body","pattern":"brown fox"}`, true},
		{`{"kind":"event_match","key":"content.body","pattern":"b?own"}`, true},
		{`{"kind":"event_match","key":"content.body","pattern":"rown"}`, false},
		// event_match only matches strings.
		{`{"kind":"event_match","key":"content.n","pattern":"42"}`, false},
		{`{"kind":"event_match","key":"content.f","pattern":"42"}`, true},
		{`{"kind":"event_match","key":"content.obj","pattern":"*"}`, false},
		{`{"kind":"event_match","key":"content.missing","pattern":"*"}`, false},
		// Dotted keys and escapes.
		{`{"kind":"event_match","key":"content.m\\.dotted.key","pattern":"v"}`, true},
		{`{"kind":"event_match","key":"content.m.dotted.key","pattern":"v"}`, false},
		{`{"kind":"event_match","key":"content.a\\.b.c","pattern":"escaped"}`, true},
		{`{"kind":"event_match","key":"content.back\\\\slash","pattern":"bs"}`, true},
		{`{"kind":"event_match","key":"content.obj.inner.deep","pattern":"yes"}`, true},
		// event_property_is: exact type and value.
		{`{"kind":"event_property_is","key":"content.n","value":42}`, true},
		{`{"kind":"event_property_is","key":"content.n","value":"42"}`, false},
		{`{"kind":"event_property_is","key":"content.f","value":42}`, false},
		{`{"kind":"event_property_is","key":"content.flag","value":true}`, true},
		{`{"kind":"event_property_is","key":"content.flag","value":"true"}`, false},
		{`{"kind":"event_property_is","key":"content.nothing","value":null}`, true},
		{`{"kind":"event_property_is","key":"content.missing","value":null}`, false},
		{`{"kind":"event_property_is","key":"content.msgtype","value":"m.text"}`, true},
		{`{"kind":"event_property_is","key":"content.msgtype","value":"M.TEXT"}`, false},
		{`{"kind":"event_property_is","key":"content.obj","value":{"inner":1}}`, false},
		// event_property_contains.
		{`{"kind":"event_property_contains","key":"content.list","value":"x"}`, true},
		{`{"kind":"event_property_contains","key":"content.list","value":7}`, true},
		{`{"kind":"event_property_contains","key":"content.list","value":"7"}`, false},
		{`{"kind":"event_property_contains","key":"content.list","value":true}`, true},
		{`{"kind":"event_property_contains","key":"content.list","value":null}`, true},
		{`{"kind":"event_property_contains","key":"content.body","value":"The"}`, false},
		// room_member_count (10 members).
		{`{"kind":"room_member_count","is":"10"}`, true},
		{`{"kind":"room_member_count","is":"==10"}`, true},
		{`{"kind":"room_member_count","is":"<10"}`, false},
		{`{"kind":"room_member_count","is":"<11"}`, true},
		{`{"kind":"room_member_count","is":"<=10"}`, true},
		{`{"kind":"room_member_count","is":">9"}`, true},
		{`{"kind":"room_member_count","is":">=11"}`, false},
		{`{"kind":"room_member_count","is":"ten"}`, false},
		{`{"kind":"room_member_count","is":"=10"}`, false},
		// sender_notification_permission (sender at 50).
		{`{"kind":"sender_notification_permission","key":"room"}`, false},
		{`{"kind":"sender_notification_permission","key":"custom"}`, true},
		{`{"kind":"sender_notification_permission","key":"unset"}`, true},
		// Unknown kinds never match.
		{`{"kind":"org.example.future"}`, false},
		{`{"kind":"event_match","key":"type"}`, false},
	}
	e := mustEvent(t, ev)
	for _, c := range cases {
		rs := Ruleset{Override: []Rule{{RuleID: "r", Enabled: true, Conditions: []json.RawMessage{json.RawMessage(c.cond)}, Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}}}
		got := Evaluate(rs, e, room, Owner{UserID: alice, Localpart: "alice"}).RuleID == "r"
		if got != c.want {
			t.Errorf("condition %s matched = %t; want %t", c.cond, got, c.want)
		}
	}
}

// TestUserRules covers a user's own rules: disabled defaults, overrides that
// mute a room, room and sender rules, content keywords and the historical
// actions.
func TestUserRules(t *testing.T) {
	owner := Owner{UserID: alice, Localpart: "alice", DisplayName: "Alice"}
	group := Room{MemberCount: 5}
	notify := []json.RawMessage{json.RawMessage(`"notify"`)}
	tweaks := []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight","value":false}`), json.RawMessage(`"coalesce"`)}
	cases := []struct {
		name      string
		change    func(rs *Ruleset)
		event     string
		rule      string
		notify    bool
		highlight bool
	}{
		{"master on silences everything", func(rs *Ruleset) { rs.Override[0].Enabled = true },
			msg("hi", `"m.mentions":{"user_ids":["@alice:example.org"]}`), ".m.rule.master", false, false},
		{"message rule disabled", func(rs *Ruleset) { rs.Underride[3].Enabled = false }, msg("hi", ""), "", false, false},
		{"mention rule disabled falls through", func(rs *Ruleset) { rs.Override[4].Enabled = false },
			msg("hi", `"m.mentions":{"user_ids":["@alice:example.org"]}`), ".m.rule.message", true, false},
		{"muted room (dont_notify)", func(rs *Ruleset) {
			rs.Override = append([]Rule{{RuleID: "!r:example.org", Enabled: true,
				Conditions: []json.RawMessage{json.RawMessage(`{"kind":"event_match","key":"room_id","pattern":"!r:example.org"}`)},
				Actions:    []json.RawMessage{json.RawMessage(`"dont_notify"`)}}}, rs.Override...)
		}, msg("hi", `"m.mentions":{"user_ids":["@alice:example.org"]}`), "!r:example.org", false, false},
		{"room rule", func(rs *Ruleset) {
			rs.Room = []Rule{{RuleID: "!r:example.org", Enabled: true, Actions: []json.RawMessage{}}}
		}, msg("hi", ""), "!r:example.org", false, false},
		{"room rule for another room", func(rs *Ruleset) {
			rs.Room = []Rule{{RuleID: "!other:example.org", Enabled: true, Actions: []json.RawMessage{}}}
		}, msg("hi", ""), ".m.rule.message", true, false},
		{"sender rule", func(rs *Ruleset) {
			rs.Sender = []Rule{{RuleID: bob, Enabled: true, Actions: tweaks}}
		}, msg("hi", ""), bob, true, false},
		{"keyword", func(rs *Ruleset) {
			rs.Content = append([]Rule{{RuleID: "kw", Enabled: true, Pattern: "deploy*", Actions: append(notify, json.RawMessage(`{"set_tweak":"highlight"}`))}}, rs.Content...)
		}, msg("Deploying now", ""), "kw", true, true},
		{"disabled keyword", func(rs *Ruleset) {
			rs.Content = append([]Rule{{RuleID: "kw", Enabled: false, Pattern: "deploy*", Actions: notify}}, rs.Content...)
		}, msg("deploying now", ""), ".m.rule.message", true, false},
		{"highlight without notify", func(rs *Ruleset) {
			rs.Override = append([]Rule{{RuleID: "hl", Enabled: true, Actions: []json.RawMessage{json.RawMessage(`{"set_tweak":"highlight"}`)}}}, rs.Override...)
		}, msg("hi", ""), "hl", false, false},
	}
	for _, c := range cases {
		rs := Defaults(alice)
		c.change(&rs)
		got := Evaluate(rs, mustEvent(t, c.event), group, owner)
		if got.RuleID != c.rule || got.Notify != c.notify || got.Highlight != c.highlight {
			t.Errorf("%s: Evaluate = rule %q notify %t highlight %t; want %q %t %t", c.name, got.RuleID, got.Notify, got.Highlight, c.rule, c.notify, c.highlight)
		}
		for _, a := range got.Actions {
			if s := string(a); s == `"dont_notify"` || s == `"coalesce"` {
				t.Errorf("%s: actions %s keep the historical %s", c.name, got.Actions, s)
			}
		}
	}
}

// TestEvaluateManySharesRulesets checks that the grouped evaluation gives every
// user the answer of their own ruleset, with users on the defaults sharing one
// compiled set.
func TestEvaluateManySharesRulesets(t *testing.T) {
	ev := mustEvent(t, msg("hi Carol and dave", `"m.mentions":{"user_ids":["@u3:example.org"]}`))
	room := &Room{MemberCount: 10}
	sets := map[string]*compiled{}
	var targets []target
	for i := range 10 {
		u := fmt.Sprintf("@u%d:example.org", i)
		rs := Defaults(u)
		if i == 7 {
			rs.Underride[3].Enabled = false // u7 turned group messages off
		}
		c, key := compileFor(rs, u)
		if shared, ok := sets[key]; ok {
			c = shared
		} else {
			sets[key] = c
		}
		targets = append(targets, target{owner: Owner{UserID: u, Localpart: fmt.Sprintf("u%d", i)}, set: c})
	}
	if len(sets) != 2 {
		t.Errorf("%d distinct compiled sets; want 2 (the defaults and u7's)", len(sets))
	}
	got := map[string]Outcome{}
	evaluateMany(ev, room, targets, func(t *target, o Outcome) { got[t.owner.UserID] = o })
	for _, tg := range targets {
		want := tg.set.evaluate(ev, room, &tg.owner)
		if o := got[tg.owner.UserID]; o.RuleID != want.RuleID || o.Highlight != want.Highlight {
			t.Errorf("evaluateMany for %s = %q; want %q", tg.owner.UserID, o.RuleID, want.RuleID)
		}
	}
	if got["@u3:example.org"].RuleID != ".m.rule.is_user_mention" || !got["@u3:example.org"].Highlight {
		t.Errorf("u3 = %+v; want the mention, highlighted", got["@u3:example.org"])
	}
	if _, ok := got["@u7:example.org"]; ok {
		t.Errorf("u7 (group messages off) was notified")
	}
}

func TestSplitKey(t *testing.T) {
	cases := map[string][]string{
		"content.body":                 {"content", "body"},
		`content.m\.relates_to.rel`:    {"content", "m.relates_to", "rel"},
		`content.a\\.b`:                {"content", `a\`, "b"},
		`content.a\b`:                  {"content", `a\b`},
		"type":                         {"type"},
		`content.m\.mentions.user_ids`: {"content", "m.mentions", "user_ids"},
	}
	for in, want := range cases {
		if got := splitKey(in); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("splitKey(%q) = %q; want %q", in, got, want)
		}
	}
}
