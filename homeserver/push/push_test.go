package push

import "testing"

func TestDefaultsParseAndNameTheUser(t *testing.T) {
	rs := Defaults("@alice:example.org")
	if len(rs.Override) < 5 || len(rs.Underride) != 5 {
		t.Fatalf("defaults have %d override and %d underride rules", len(rs.Override), len(rs.Underride))
	}
	for _, r := range rs.Override {
		if r.RuleID == ".m.rule.invite_for_me" && string(r.Conditions[2]) != `{"kind": "event_match", "key": "state_key", "pattern": "@alice:example.org"}` {
			t.Errorf("invite_for_me condition = %s; want alice's user ID", r.Conditions[2])
		}
		if !r.Default {
			t.Errorf("%s is not marked default", r.RuleID)
		}
	}
}
