package rooms

import (
	"net"
	"regexp"
	"strings"
	"sync"

	"github.com/tidwall/gjson"
)

// serverACL is the content of one m.room.server_acl event with its globs compiled.
// It is immutable once built, so one value serves concurrent checks.
type serverACL struct {
	allowIPLiterals bool
	deny, allow     []*regexp.Regexp
}

// compileACL compiles ACL content (the event's content object).
func compileACL(content gjson.Result) *serverACL {
	acl := &serverACL{allowIPLiterals: true}
	if a := content.Get("allow_ip_literals"); a.Exists() && a.Type == gjson.False {
		acl.allowIPLiterals = false
	}
	for _, g := range content.Get("deny").Array() {
		acl.deny = append(acl.deny, globRegexp(g.String()))
	}
	for _, g := range content.Get("allow").Array() {
		acl.allow = append(acl.allow, globRegexp(g.String()))
	}
	return acl
}

// allows applies the ACL to a server name: an IP literal needs allow_ip_literals
// (default true), a deny glob match refuses, and an allow glob must match (no allow
// list allows nobody). Globs match the name without its port, as the spec has it,
// or with it, as Synapse also matches.
func (acl *serverACL) allows(server string) bool {
	host := server
	if h, _, err := net.SplitHostPort(server); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip := net.ParseIP(host); ip != nil && !acl.allowIPLiterals {
		return false
	}
	for _, re := range acl.deny {
		if re != nil && (re.MatchString(host) || re.MatchString(server)) {
			return false
		}
	}
	for _, re := range acl.allow {
		if re != nil && (re.MatchString(host) || re.MatchString(server)) {
			return true
		}
	}
	return false
}

// aclAllows compiles ACL content and applies it to server once; ServerAllowed
// uses the cache instead.
func aclAllows(content gjson.Result, server string) bool {
	return compileACL(content).allows(server)
}

// globRegexp compiles a server ACL glob: * is any run of characters, ? one, and
// everything else literal. A glob too large to compile is nil and matches nothing.
func globRegexp(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil
	}
	return re
}

// maxACLs bounds the compiled-ACL cache; when full it starts over. An ACL event
// never changes (a new ACL is a new event with a new ID), so entries never go
// stale, and a server is in far fewer rooms with an ACL than this.
const maxACLs = 1024

// aclCache maps an m.room.server_acl event ID to its compiled ACL. The zero value
// is ready to use.
type aclCache struct {
	mu sync.Mutex
	m  map[string]*serverACL // guarded by mu
}

// get returns the compiled ACL of the event eventID whose JSON is raw, compiling
// it on first use.
func (c *aclCache) get(eventID, raw string) *serverACL {
	c.mu.Lock()
	acl := c.m[eventID]
	c.mu.Unlock()
	if acl != nil {
		return acl
	}
	acl = compileACL(gjson.Get(raw, "content"))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxACLs {
		c.m = make(map[string]*serverACL)
	}
	c.m[eventID] = acl
	return acl
}
