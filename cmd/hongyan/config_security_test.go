package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigPrintsNoSecret: `hongyan config` output lands in bug reports and
// chat, so every secret is redacted, whether it came from the file, the
// environment or a flag, and the rest stays readable.
func TestConfigPrintsNoSecret(t *testing.T) {
	secrets := map[string]string{
		"database password": "dbpw-7c1e",
		"database query":    "dbqpw-91aa",
		"NATS token":        "natstoken-55d0",
		"NATS password":     "natspw-0b3f",
		"S3 secret key":     "s3secret-e2a4",
		"shared secret":     "regsecret-c6b9",
	}
	file := filepath.Join(t.TempDir(), "hongyan.yaml")
	if err := os.WriteFile(file, []byte(`
server_name: chat.example.org
media:
  backend: s3
  s3:
    endpoint: minio.internal:9000
    bucket: media
    access_key: hongyan-media
    secret_key: `+secrets["S3 secret key"]+`
registration:
  shared_secret: `+secrets["shared secret"]+`
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "config", "--config", file,
		"--database-url", "postgres://hongyan:"+secrets["database password"]+"@db.internal:5432/hongyan?sslmode=require&sslpassword="+secrets["database query"])
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HONGYAN_NATS_URL=nats://" + secrets["NATS token"] + "@nats1.internal:4222,nats://hongyan:" + secrets["NATS password"] + "@nats2.internal:4222",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hongyan config = %v\n%s", err, out)
	}
	for what, s := range secrets {
		if strings.Contains(string(out), s) {
			t.Errorf("hongyan config prints the %s %q:\n%s", what, s, out)
		}
	}
	for _, want := range []string{
		"server_name: chat.example.org",
		"postgres://hongyan:***@db.internal:5432/hongyan?",
		"sslmode=require",
		"nats://***@nats1.internal:4222,nats://***@nats2.internal:4222",
		"access_key: hongyan-media",
		"secret_key: '***'",
		"shared_secret: '***'",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("hongyan config lacks %q:\n%s", want, out)
		}
	}
}
