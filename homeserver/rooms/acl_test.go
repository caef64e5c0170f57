package rooms

import (
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
