package rooms

import (
	"fmt"
	"testing"

	"github.com/tidwall/gjson"
)

func TestServerACL(t *testing.T) {
	for _, tc := range []struct {
		acl, server string
		want        bool
	}{
		{`{"allow":["*"]}`, "matrix.org", true},
		{`{}`, "matrix.org", false},
		{`{"allow":["*"],"deny":["evil.example"]}`, "evil.example", false},
		{`{"allow":["*"],"deny":["evil.example"]}`, "evil.example:8448", false},
		{`{"allow":["*"],"deny":["*.evil.example"]}`, "a.evil.example", false},
		{`{"allow":["*"],"deny":["*.evil.example"]}`, "evil.example", true},
		{`{"allow":["*.org"]}`, "matrix.org", true},
		{`{"allow":["*.org"]}`, "matrix.com", false},
		{`{"allow":["matri?.org"]}`, "matrix.org", true},
		{`{"allow":["*"],"deny":["localhost:8801"]}`, "localhost:8801", false},
		{`{"allow":["*"],"deny":["localhost:8801"]}`, "localhost:8802", true},
		{`{"allow":["*"],"allow_ip_literals":false}`, "127.0.0.1:8448", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{`{"allow":["*"]}`, "127.0.0.1", true},
		{`{"allow":["a.b"]}`, "aXb", false}, // dots are literal
	} {
		if got := aclAllows(gjson.Parse(tc.acl), tc.server); got != tc.want {
			t.Errorf("ACL %s for %s = %v; want %v", tc.acl, tc.server, got, tc.want)
		}
	}
}

// TestACLCacheCompilesOnce: an ACL event's globs are compiled on its first check
// and reused after (an event never changes); a new ACL event is compiled anew; the
// cache stays within its bound however many ACL events it meets.
func TestACLCacheCompilesOnce(t *testing.T) {
	var c aclCache
	deny := `{"content":{"allow":["*"],"deny":["evil.example"]}}`
	first := c.get("$acl1", deny)
	if again := c.get("$acl1", deny); again != first {
		t.Errorf("get($acl1) twice = %p, %p; want the same compiled ACL", first, again)
	}
	if first.allows("evil.example") || !first.allows("good.example") {
		t.Errorf("cached ACL allows(evil.example), allows(good.example) = %v, %v; want false, true",
			first.allows("evil.example"), first.allows("good.example"))
	}
	second := c.get("$acl2", `{"content":{"allow":["*"]}}`)
	if second == first || !second.allows("evil.example") {
		t.Errorf("get($acl2) = %p (allows evil.example: %v); want a new ACL that allows it", second, second.allows("evil.example"))
	}
	for i := range 3 * maxACLs {
		c.get(fmt.Sprintf("$acl%d", i+3), deny)
		if n := len(c.m); n > maxACLs {
			t.Fatalf("after %d ACL events the cache holds %d; want at most %d", i+3, n, maxACLs)
		}
	}
}

func BenchmarkServerACLCached(b *testing.B) {
	var c aclCache
	raw := `{"content":{"allow":["*"],"deny":["*.evil.example","bad.example","worse.example:8448"]}}`
	for b.Loop() {
		c.get("$acl", raw).allows("matrix.org")
	}
}
