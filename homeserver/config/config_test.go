package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadLayersFileThenEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hongyan.yaml")
	os.WriteFile(path, []byte(`
server_name: example.org
listen: 0.0.0.0:9000
database:
  url: postgres://u@127.0.0.1/db
auth:
  access_token_lifetime: 5m
registration:
  shared_secret: s3cret
`), 0o600)
	cfg, err := Load(path, []string{
		"HONGYAN_LISTEN=127.0.0.1:9001",
		"HONGYAN_RATE_LIMIT=false",
		"HONGYAN_RATE_LIMIT_BURST=7",
		"HONGYAN_REGISTRATION_GUESTS=true",
		"PATH=/bin",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"server_name from file", cfg.ServerName, "example.org"},
		{"listen from env over file", cfg.Listen, "127.0.0.1:9001"},
		{"database.url from file", cfg.Database.URL, "postgres://u@127.0.0.1/db"},
		{"duration from file", cfg.Auth.AccessTokenLifetime, 5 * time.Minute},
		{"alias HONGYAN_RATE_LIMIT", cfg.RateLimit.Enabled, false},
		{"derived env name", cfg.RateLimit.Burst, 7},
		{"nested bool", cfg.Registration.Guests, true},
		{"default kept", cfg.Limits.MaxRequestBytes, int64(1 << 20)},
		{"derived public URL", cfg.PublicBaseURL, "http://127.0.0.1:9001"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
}

func TestLoadRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("no_such_setting: 1\n"), 0o600)
	if _, err := Load(unknown, nil); err == nil {
		t.Error("Load(file with an unknown key) = nil error; want an error naming it")
	}
	if _, err := Load("", []string{"HONGYAN_RATE_LIMIT_BURST=lots"}); err == nil {
		t.Error("Load(HONGYAN_RATE_LIMIT_BURST=lots) = nil error; want an error")
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if _, err := Load(empty, nil); err != nil {
		t.Errorf("Load(empty file) = %v; want defaults", err)
	}
	bad := Default()
	bad.Listen = "nonsense"
	if err := bad.Validate(); err == nil {
		t.Error("Validate(listen: nonsense) = nil; want an error")
	}
	if cfg, err := Load("", []string{"HONGYAN_PUSH_GATEWAY_ALLOW_CIDRS=127.0.0.0/8,::1/128"}); err != nil || cfg.Push.GatewayAllowCIDRs != "127.0.0.0/8,::1/128" {
		t.Errorf("Load(HONGYAN_PUSH_GATEWAY_ALLOW_CIDRS) = %q, %v; want 127.0.0.0/8,::1/128", cfg.Push.GatewayAllowCIDRs, err)
	}
	cfg, err := Load("", []string{"HONGYAN_FEDERATION_ALLOW_CIDRS=10.0.0.0/8, fd00::/8", "HONGYAN_MEDIA_PREVIEW_ALLOW=192.168.0.0/16"})
	if err != nil || cfg.Federation.AllowCIDRs != "10.0.0.0/8, fd00::/8" || cfg.Media.PreviewAllow != "192.168.0.0/16" {
		t.Errorf("Load(allow-list variables) = %q, %q, %v", cfg.Federation.AllowCIDRs, cfg.Media.PreviewAllow, err)
	}
	for _, set := range []func(*Config){
		func(c *Config) { c.Federation.AllowCIDRs = "10.0.0.0/33" },
		func(c *Config) { c.Media.PreviewAllow = "10.0.0.0/8,intranet" },
		func(c *Config) { c.Push.GatewayAllowCIDRs = "127.0.0.0/8,localhost" },
	} {
		c := Default()
		set(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(allow-lists %q, %q, %q) = nil; want an error", c.Federation.AllowCIDRs, c.Media.PreviewAllow, c.Push.GatewayAllowCIDRs)
		}
	}
}
