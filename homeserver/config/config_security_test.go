package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestRegistrationOpenOnlyForDevelopmentNames: the default opens registration for
// a server name only this machine can own, never because of the listener — a
// production server behind a reverse proxy listens on loopback too.
func TestRegistrationOpenOnlyForDevelopmentNames(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		serverName, listen string
		explicit           *bool
		want               bool
	}{
		{"localhost", "127.0.0.1:8008", nil, true},
		{"localhost:8008", "0.0.0.0:8008", nil, true},
		{"LocalHost:8448", "127.0.0.1:8008", nil, true},
		{"127.0.0.1", "127.0.0.1:8008", nil, true},
		{"127.0.0.1:8448", "127.0.0.1:8008", nil, true},
		{"[::1]", "[::1]:8008", nil, true},
		{"[::1]:8448", "[::1]:8008", nil, true},
		// Production names, whatever the listener.
		{"chat.example.org", "127.0.0.1:8008", nil, false},
		{"chat.example.org", "[::1]:8008", nil, false},
		{"chat.example.org", "localhost:8008", nil, false},
		{"example.org:8448", "0.0.0.0:8008", nil, false},
		{"localhost.example.org", "127.0.0.1:8008", nil, false},
		{"127.0.0.2", "127.0.0.1:8008", nil, false},
		{"192.0.2.10", "127.0.0.1:8008", nil, false},
		// An explicit setting always wins.
		{"chat.example.org", "127.0.0.1:8008", &yes, true},
		{"localhost:8008", "127.0.0.1:8008", &no, false},
	}
	for _, c := range cases {
		cfg := Default()
		cfg.ServerName, cfg.Listen, cfg.Registration.Enabled = c.serverName, c.listen, c.explicit
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(server_name %s, listen %s) = %v", c.serverName, c.listen, err)
		}
		if got := cfg.RegistrationOpen(); got != c.want {
			t.Errorf("RegistrationOpen(server_name %s, listen %s, enabled %v) = %v; want %v", c.serverName, c.listen, ptr(c.explicit), got, c.want)
		}
	}
}

func ptr(b *bool) any {
	if b == nil {
		return "unset"
	}
	return *b
}

// secretLooking matches field names that suggest a secret or a URL that may
// carry credentials.
var secretLooking = regexp.MustCompile(`(?i)secret|pass|token|key|credential|private|url|uri|dsn`)

// notSecret lists the fields whose names look secret but whose values are not,
// each with the reason.
var notSecret = map[string]string{
	"Config.PublicBaseURL":      "the public address clients are told",
	"Config.SigningKeyPath":     "a file path; the key itself is in the file",
	"Native.TLSKey":             "a file path",
	"Federation.TLSKey":         "a file path",
	"KeyServer.VerifyKeys":      "public keys",
	"S3.AccessKey":              "the key's ID, like a user name",
	"Registration.RequireToken": "a switch",
	"TURN.URIs":                 "the public turn: URIs every client is told",
}

// leafFields calls fn for every non-struct field reachable from t, through
// nested structs and slices of structs, with its Type.Field name.
func leafFields(t reflect.Type, fn func(owner string, f reflect.StructField)) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		ft := f.Type
		for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Map {
			if ft.Kind() == reflect.Map && ft.Elem().Kind() != reflect.Struct {
				break
			}
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			leafFields(ft, fn)
			continue
		}
		fn(t.Name(), f)
	}
}

// TestSecretFieldsAreTagged keeps a new secret from being printed by `hongyan
// config`: a field whose name looks secret must carry a secret tag (or be listed
// in notSecret with the reason), and secret tags sit only on strings.
func TestSecretFieldsAreTagged(t *testing.T) {
	leafFields(reflect.TypeOf(Config{}), func(owner string, f reflect.StructField) {
		name := owner + "." + f.Name
		tag, tagged := f.Tag.Lookup("secret")
		if tagged {
			if f.Type.Kind() != reflect.String {
				t.Errorf("%s is tagged secret but is a %s; Redacted handles strings only", name, f.Type)
			}
			if tag != "true" && tag != "url" && tag != "userinfo" {
				t.Errorf("%s: secret:%q; want true, url or userinfo", name, tag)
			}
			return
		}
		if _, ok := notSecret[name]; ok || !secretLooking.MatchString(f.Name) {
			return
		}
		if f.Type.Kind() == reflect.Bool || f.Type == durationType || f.Type.Kind() == reflect.Int {
			return // switches, lifetimes and counts hold no secret
		}
		t.Errorf("%s looks like a secret: tag it secret:\"true\" (or \"url\"/\"userinfo\") or list it in notSecret with the reason", name)
	})
}

// TestRedactedHidesEverySecret sets every field tagged secret, and a trusted key
// server, and checks that the YAML `hongyan config` prints has none of their
// values while keeping what is not secret.
func TestRedactedHidesEverySecret(t *testing.T) {
	cfg := Default()
	var secrets []string
	fields := 0
	var set func(v reflect.Value)
	set = func(v reflect.Value) {
		for i := 0; i < v.NumField(); i++ {
			f, sf := v.Field(i), v.Type().Field(i)
			if f.Kind() == reflect.Struct {
				set(f)
				continue
			}
			mode := sf.Tag.Get("secret")
			if mode == "" {
				continue
			}
			fields++
			secret := "sentinel-" + strings.ToLower(sf.Name) + "-4f9c"
			switch mode {
			case "url":
				f.SetString("postgres://alice:" + secret + "@db.internal:5432/hongyan?sslmode=disable&password=" + secret + "q")
				secrets = append(secrets, secret+"q")
			case "userinfo":
				f.SetString("nats://" + secret + "@nats1:4222, nats://bob:" + secret + "p@nats2:4222")
				secrets = append(secrets, secret+"p")
			default:
				f.SetString(secret)
			}
			secrets = append(secrets, secret)
		}
	}
	set(reflect.ValueOf(&cfg).Elem())
	// database.url, nats.url, media.s3.secret_key, registration.shared_secret
	if fields < 4 {
		t.Fatalf("only %d fields tagged secret; want at least 4", fields)
	}
	cfg.Federation.TrustedKeyServers = []KeyServer{{ServerName: "notary.example.org"}}
	before := cfg

	out, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if strings.Contains(string(out), s) {
			t.Errorf("YAML() contains the secret %q:\n%s", s, out)
		}
	}
	for _, want := range []string{
		"postgres://alice:***@db.internal:5432/hongyan",
		"sslmode=disable",
		"nats://***@nats1:4222,nats://***@nats2:4222",
		"secret_key: '***'",
		"shared_secret: '***'",
		"notary.example.org",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("YAML() lacks %q:\n%s", want, out)
		}
	}
	if !reflect.DeepEqual(cfg, before) {
		t.Error("YAML() changed the configuration it printed")
	}
}

func TestRedactValue(t *testing.T) {
	cases := []struct{ mode, in, want string }{
		{"url", "postgres://u:pw@h/db", "postgres://u:***@h/db"},
		{"url", "postgres://u@h/db", "postgres://u@h/db"},
		{"url", "postgres://h/db?user=u&password=pw", "postgres://h/db?password=***&user=u"},
		{"url", "::not a url", "***"},
		{"userinfo", "nats://tok@h:4222", "nats://***@h:4222"},
		{"userinfo", "nats://h:4222", "nats://h:4222"},
		{"true", "anything", "***"},
	}
	for _, c := range cases {
		if got := RedactValue(c.mode, c.in); got != c.want {
			t.Errorf("RedactValue(%q, %q) = %q; want %q", c.mode, c.in, got, c.want)
		}
	}
}

func TestDevelopmentServerNameRejectsLookAlikes(t *testing.T) {
	for _, name := range []string{"localhost:notaport", "localhost:99999", "localhost.", "::1", "[::2]", "127.0.0.1.example.org", ""} {
		if DevelopmentServerName(name) {
			t.Errorf("DevelopmentServerName(%q) = true; want false", name)
		}
	}
}
