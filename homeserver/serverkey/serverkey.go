// Package serverkey loads the server's ed25519 signing key, the identity other servers
// verify its events and requests with, generating one on first start.
//
// The file format is Synapse's and Dendrite's one-line form, so keys move between
// servers: "ed25519 <key id> <unpadded base64 of the 32-byte seed>".
package serverkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Key is a signing key with its ID.
type Key struct {
	// ID is "ed25519:<version>".
	ID         string
	PrivateKey ed25519.PrivateKey
}

// Public returns the public half.
func (k Key) Public() ed25519.PublicKey { return k.PrivateKey.Public().(ed25519.PublicKey) }

// Generate makes a new key with a random version.
func Generate() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generate signing key: %w", err)
	}
	v := make([]byte, 4)
	rand.Read(v)
	version := "a_" + base64.RawURLEncoding.EncodeToString(v)[:4]
	return Key{ID: "ed25519:" + version, PrivateKey: priv}, nil
}

// Marshal renders the key in the one-line file format.
func (k Key) Marshal() []byte {
	version := strings.TrimPrefix(k.ID, "ed25519:")
	return []byte(fmt.Sprintf("ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(k.PrivateKey.Seed())))
}

// Parse reads the one-line file format.
func Parse(data []byte) (Key, error) {
	fields := strings.Fields(string(data))
	if len(fields) != 3 || fields[0] != "ed25519" {
		return Key{}, errors.New("signing key: want \"ed25519 <version> <base64 seed>\"")
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return Key{}, errors.New("signing key: seed is not 32 bytes of base64")
	}
	return Key{ID: "ed25519:" + fields[1], PrivateKey: ed25519.NewKeyFromSeed(seed)}, nil
}

// LoadOrGenerate reads the key at path, or creates a new one there (mode 0600) if the
// file does not exist.
func LoadOrGenerate(path string) (key Key, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		key, err = Parse(data)
		if err != nil {
			return key, false, fmt.Errorf("%s: %w", path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, fmt.Errorf("read signing key: %w", err)
	}
	if key, err = Generate(); err != nil {
		return key, false, err
	}
	if err := WriteNew(path, key); err != nil {
		return key, false, err
	}
	return key, true, nil
}

// WriteNew writes key to path, refusing to overwrite an existing key: losing a signing
// key breaks federation with everyone who cached it.
func WriteNew(path string, key Key) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	if _, err := f.Write(key.Marshal()); err != nil {
		f.Close()
		return fmt.Errorf("write signing key: %w", err)
	}
	return f.Close()
}
