package appservice

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Registration is one application service as its registration file describes it
// (the Synapse format, which every bridge writes).
type Registration struct {
	// ID names the service: in logs, in the ping endpoint, and as the key of its
	// queue and cursor. Unique among the registrations.
	ID string
	// URL is where the service listens for transactions and queries. Empty (url:
	// null): the service only talks to the homeserver and is pushed nothing.
	URL string
	// ASToken authenticates the service to the homeserver; HSToken the homeserver
	// to the service. Both unique; never logged (LogValue hides them).
	ASToken string `secret:"true"`
	HSToken string `secret:"true"`
	// SenderLocalpart is the service's own user, created at start if missing.
	SenderLocalpart string
	// Users, Aliases and Rooms are the namespaces the service is interested in;
	// exclusive ones are reserved for it.
	Users, Aliases, Rooms []Namespace
	// RateLimited is false when the service (and the users it acts as) are exempt
	// from rate limits. Default true.
	RateLimited bool
	// Protocols are the third-party protocols the service bridges.
	Protocols []string
	// ReceiveEphemeral pushes typing, receipts and presence in transactions
	// (receive_ephemeral, MSC2409's de.sorunome.msc2409.push_ephemeral or
	// push_ephemeral).
	ReceiveEphemeral bool
	// DeviceMasquerading lets the service act as one of its users' devices with
	// the device_id query parameter and pushes to-device messages for its users
	// (MSC3202, org.matrix.msc3202).
	DeviceMasquerading bool
	// File is the registration file it came from, for errors.
	File string
}

// Namespace is one regular expression of a namespace.
type Namespace struct {
	Exclusive bool
	// Regex is the expression as written; re matches from the start of an ID, as
	// Synapse's re.match does (bridges write their regexes for Synapse).
	Regex string
	re    *regexp.Regexp
}

// Match reports whether id is in the namespace.
func (n Namespace) Match(id string) bool { return n.re.MatchString(id) }

// LogValue keeps the tokens out of logs.
func (r *Registration) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", r.ID), slog.String("url", r.URL), slog.String("file", r.File))
}

// rawRegistration is the YAML as written. Unknown keys are ignored, as Synapse
// does: bridges write extra keys of their own.
type rawRegistration struct {
	ID              *string `yaml:"id"`
	URL             *string `yaml:"url"`
	ASToken         string  `yaml:"as_token"`
	HSToken         string  `yaml:"hs_token"`
	SenderLocalpart string  `yaml:"sender_localpart"`
	Namespaces      struct {
		Users   []rawNamespace `yaml:"users"`
		Aliases []rawNamespace `yaml:"aliases"`
		Rooms   []rawNamespace `yaml:"rooms"`
	} `yaml:"namespaces"`
	RateLimited      *bool    `yaml:"rate_limited"`
	Protocols        []string `yaml:"protocols"`
	ReceiveEphemeral bool     `yaml:"receive_ephemeral"`
	MSC2409          bool     `yaml:"de.sorunome.msc2409.push_ephemeral"`
	PushEphemeral    bool     `yaml:"push_ephemeral"`
	MSC3202          bool     `yaml:"org.matrix.msc3202"`
}

type rawNamespace struct {
	Exclusive *bool   `yaml:"exclusive"`
	Regex     *string `yaml:"regex"`
}

// LoadFiles reads and checks the registration files. A file that cannot be read
// or parsed, a missing or malformed field, or an ID or token used twice is an
// error naming the file and the field: the server does not start with a service
// half configured.
func LoadFiles(paths []string) ([]*Registration, error) {
	var regs []*Registration
	ids, tokens := map[string]string{}, map[string]string{}
	for _, p := range paths {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		r, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		r.File = p
		if other, dup := ids[r.ID]; dup {
			return nil, fmt.Errorf("application service %s: id %q is already used by %s", p, r.ID, other)
		}
		ids[r.ID] = p
		for field, tok := range map[string]string{"as_token": r.ASToken, "hs_token": r.HSToken} {
			if other, dup := tokens[tok]; dup {
				return nil, fmt.Errorf("application service %s: %s is already used by %s", p, field, other)
			}
		}
		tokens[r.ASToken], tokens[r.HSToken] = p+" (as_token)", p+" (hs_token)"
		if r.ASToken == r.HSToken {
			return nil, fmt.Errorf("application service %s: as_token and hs_token must differ", p)
		}
		regs = append(regs, r)
	}
	return regs, nil
}

// Parse reads one registration file's YAML.
func Parse(data []byte) (*Registration, error) {
	var raw rawRegistration
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a valid registration: %w", err)
	}
	r := &Registration{
		ASToken: raw.ASToken, HSToken: raw.HSToken, SenderLocalpart: raw.SenderLocalpart,
		RateLimited: raw.RateLimited == nil || *raw.RateLimited, Protocols: raw.Protocols,
		ReceiveEphemeral:   raw.ReceiveEphemeral || raw.MSC2409 || raw.PushEphemeral,
		DeviceMasquerading: raw.MSC3202,
	}
	switch {
	case raw.ID == nil || *raw.ID == "":
		return nil, errors.New("id: required")
	case raw.ASToken == "":
		return nil, errors.New("as_token: required")
	case raw.HSToken == "":
		return nil, errors.New("hs_token: required")
	case raw.SenderLocalpart == "":
		return nil, errors.New("sender_localpart: required")
	case strings.ContainsAny(raw.SenderLocalpart, "@:"):
		return nil, errors.New("sender_localpart: a localpart, without @ or :server")
	}
	r.ID = *raw.ID
	if raw.URL != nil && *raw.URL != "" {
		u, err := url.Parse(*raw.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("url: %q is not an http or https URL", *raw.URL)
		}
		r.URL = strings.TrimSuffix(*raw.URL, "/")
	}
	var err error
	if r.Users, err = namespaces("users", raw.Namespaces.Users); err != nil {
		return nil, err
	}
	if r.Aliases, err = namespaces("aliases", raw.Namespaces.Aliases); err != nil {
		return nil, err
	}
	if r.Rooms, err = namespaces("rooms", raw.Namespaces.Rooms); err != nil {
		return nil, err
	}
	return r, nil
}

// namespaces compiles one kind's regexes once, at load.
func namespaces(kind string, raw []rawNamespace) ([]Namespace, error) {
	var out []Namespace
	for i, n := range raw {
		field := fmt.Sprintf("namespaces.%s[%d]", kind, i)
		if n.Regex == nil {
			return nil, fmt.Errorf("%s.regex: required", field)
		}
		if n.Exclusive == nil {
			return nil, fmt.Errorf("%s.exclusive: required (true or false)", field)
		}
		re, err := regexp.Compile(`^(?:` + *n.Regex + `)`)
		if err != nil {
			return nil, fmt.Errorf("%s.regex: %w", field, err)
		}
		out = append(out, Namespace{Exclusive: *n.Exclusive, Regex: *n.Regex, re: re})
	}
	return out, nil
}

// matchAny reports whether id is in one of ns, and whether one of those that
// match is exclusive.
func matchAny(ns []Namespace, id string) (match, exclusive bool) {
	for _, n := range ns {
		if n.Match(id) {
			match = true
			if n.Exclusive {
				return true, true
			}
		}
	}
	return match, false
}

// SenderID is the service's own user ID on server.
func (r *Registration) SenderID(server string) string { return "@" + r.SenderLocalpart + ":" + server }
