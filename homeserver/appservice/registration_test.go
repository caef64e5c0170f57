package appservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodRegistration = `id: irc
url: http://127.0.0.1:9999
as_token: as-irc
hs_token: hs-irc
sender_localpart: ircbot
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
protocols: [irc]
some_bridge_specific_key: ignored
namespaces:
  users:
    - exclusive: true
      regex: '@irc_.*:example.org'
  aliases:
    - exclusive: false
      regex: '#irc_.*'
  rooms: []
`

func TestParseRegistration(t *testing.T) {
	r, err := Parse([]byte(goodRegistration))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "irc" || r.URL != "http://127.0.0.1:9999" || r.RateLimited || !r.ReceiveEphemeral || !r.DeviceMasquerading ||
		len(r.Protocols) != 1 || len(r.Users) != 1 || !r.Users[0].Exclusive || len(r.Aliases) != 1 || r.Aliases[0].Exclusive {
		t.Errorf("Parse = %+v", r)
	}
	for id, want := range map[string]bool{
		"@irc_alice:example.org":  true,
		"@alice:example.org":      false,
		"x@irc_alice:example.org": false, // anchored at the start, as Synapse's re.match
	} {
		if got, _ := matchAny(r.Users, id); got != want {
			t.Errorf("users namespace matches %q = %v; want %v", id, got, want)
		}
	}
	if n, err := Parse([]byte(strings.Replace(goodRegistration, "url: http://127.0.0.1:9999", "url: null", 1))); err != nil || n.URL != "" {
		t.Errorf("url: null = %q, %v; want no URL", n.URL, err)
	}
	if n, _ := Parse([]byte(strings.Replace(goodRegistration, "rate_limited: false\n", "", 1))); !n.RateLimited {
		t.Error("rate_limited absent: want rate limited")
	}
}

func TestParseRegistrationErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"no id", "id: irc\n", "", "id"},
		{"no as_token", "as_token: as-irc\n", "", "as_token"},
		{"no hs_token", "hs_token: hs-irc\n", "", "hs_token"},
		{"no sender", "sender_localpart: ircbot\n", "", "sender_localpart"},
		{"sender with server", "sender_localpart: ircbot", "sender_localpart: '@ircbot:x'", "sender_localpart"},
		{"bad url", "url: http://127.0.0.1:9999", "url: ftp://x", "url"},
		{"bad regex", "regex: '@irc_.*:example.org'", "regex: '@irc_(.*'", "namespaces.users[0].regex"},
		{"no exclusive", "    - exclusive: false\n      regex: '#irc_.*'", "    - regex: '#irc_.*'", "namespaces.aliases[0].exclusive"},
		{"not yaml", "namespaces:", "namespaces: [", "not a valid registration"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(strings.Replace(goodRegistration, c.from, c.to, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Parse error = %v; want one naming %q", c.name, err, c.want)
		}
	}
}

func TestLoadFilesRefusesDuplicates(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.yaml", goodRegistration)
	sameID := write("b.yaml", strings.NewReplacer("as-irc", "as-2", "hs-irc", "hs-2").Replace(goodRegistration))
	sameToken := write("c.yaml", strings.NewReplacer("id: irc", "id: two", "hs-irc", "hs-2").Replace(goodRegistration))
	tokensEqual := write("d.yaml", strings.NewReplacer("hs-irc", "as-irc").Replace(goodRegistration))
	for _, c := range []struct {
		files []string
		want  string
	}{
		{[]string{a, sameID}, "b.yaml: id \"irc\" is already used by " + a},
		{[]string{a, sameToken}, "c.yaml: as_token is already used"},
		{[]string{tokensEqual}, "d.yaml: as_token and hs_token must differ"},
		{[]string{filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
	} {
		if _, err := LoadFiles(c.files); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadFiles(%v) = %v; want an error with %q", c.files, err, c.want)
		}
	}
	regs, err := LoadFiles([]string{a})
	if err != nil || len(regs) != 1 || regs[0].File != a {
		t.Errorf("LoadFiles(%s) = %v, %v", a, regs, err)
	}
}
