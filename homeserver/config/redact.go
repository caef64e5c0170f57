package config

import (
	"net/url"
	"reflect"
	"strings"
)

// Mask is what a secret is shown as.
const Mask = "***"

// Secrets are marked on their fields with a `secret` struct tag, read by
// Config.Redacted:
//
//	secret:"true"      the whole value is a secret
//	secret:"url"       a URL whose password (and password-like query parameters)
//	                   are secret: postgres://user:***@host/db
//	secret:"userinfo"  a URL, or a comma-separated list of them, whose whole user
//	                   part is secret, as in nats://TOKEN@host
//
// TestSecretFieldsAreTagged fails for a new field whose name suggests a secret
// (password, secret, token, key, URL, ...) until it is tagged or listed there as
// not secret, so a secret cannot be added and printed by mistake.

// Redacted returns a copy of the configuration with every field tagged secret
// replaced by Mask (URLs keep everything but their credentials). Unset
// secrets stay empty, so the output still says which are set.
func (c Config) Redacted() Config {
	redactStruct(reflect.ValueOf(&c).Elem())
	return c
}

// redactStruct redacts the secret fields of the addressable struct v in place.
// Slices of structs are copied first: the copy Redacted works on shares their
// backing arrays with the original.
func redactStruct(v reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := v.Field(i)
		switch {
		case f.Kind() == reflect.Struct:
			redactStruct(f)
			continue
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct && f.Len() > 0:
			cp := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			reflect.Copy(cp, f)
			for j := 0; j < cp.Len(); j++ {
				redactStruct(cp.Index(j))
			}
			f.Set(cp)
			continue
		}
		mode := t.Field(i).Tag.Get("secret")
		if mode == "" || f.Kind() != reflect.String || f.String() == "" {
			continue
		}
		f.SetString(RedactValue(mode, f.String()))
	}
}

// RedactValue hides the secret parts of s, a value of a field tagged
// secret:"mode". A URL that does not parse is hidden whole.
func RedactValue(mode, s string) string {
	switch mode {
	case "url":
		return redactURL(s, false)
	case "userinfo":
		parts := strings.Split(s, ",")
		for i, p := range parts {
			parts[i] = redactURL(strings.TrimSpace(p), true)
		}
		return strings.Join(parts, ",")
	}
	return Mask
}

// redactURL hides a URL's password, or its whole user part when whole is set,
// and the values of query parameters that name a secret (?password=...).
func redactURL(s string, whole bool) string {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return Mask
	}
	if u.User != nil {
		_, hasPassword := u.User.Password()
		switch {
		case whole:
			u.User = url.User(Mask)
		case hasPassword:
			u.User = url.UserPassword(u.User.Username(), Mask)
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return Mask
		}
		for k := range q {
			if secretName(k) {
				q[k] = []string{Mask}
			}
		}
		u.RawQuery = q.Encode()
	}
	// url.URL.String escapes the asterisks of a redacted user part; show them as is.
	return strings.ReplaceAll(u.String(), url.QueryEscape(Mask), Mask)
}

// secretName reports whether a setting or parameter called name probably holds
// a secret.
func secretName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"pass", "secret", "token", "key", "credential", "private"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}
