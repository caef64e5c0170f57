package serverkey

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestLoadOrGenerateKeepsTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k", "signing.key")
	k1, created, err := LoadOrGenerate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrGenerate = created %v, %v; want a new key", created, err)
	}
	k2, created, err := LoadOrGenerate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrGenerate = created %v, %v; want the stored key", created, err)
	}
	if k1.ID != k2.ID || !bytes.Equal(k1.PrivateKey, k2.PrivateKey) {
		t.Fatalf("reloaded key %s differs from generated %s", k2.ID, k1.ID)
	}
	if err := WriteNew(path, k1); err == nil {
		t.Fatal("WriteNew over an existing key succeeded; want a refusal")
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "ed25519 a_x", "rsa a_x AAAA", "ed25519 a_x not-base64!"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) = nil error; want an error", in)
		}
	}
}
