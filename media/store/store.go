// Package store keeps media bytes in a backend: a local directory or an S3 bucket
// (MinIO, AWS, ...). Objects are named by the SHA-256 of their content, so identical
// files are stored once, and are written once and never modified.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrNotFound is returned for a key the backend does not hold.
var ErrNotFound = errors.New("media object not found")

// Object is an open stored object: readable, seekable for ranged requests.
type Object interface {
	io.ReadSeekCloser
}

// Backend stores immutable objects by key.
type Backend interface {
	// Put stores size bytes from r under key, streaming them. Putting an existing
	// key is a no-op that succeeds.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Open returns the object and its size.
	Open(ctx context.Context, key string) (Object, int64, error)
	// Has reports whether key is stored.
	Has(ctx context.Context, key string) (bool, error)
	// Delete removes key; deleting a missing key succeeds.
	Delete(ctx context.Context, key string) error
}

// FS is a Backend on a local directory, objects at dir/ab/cd/<key>.
type FS struct{ Dir string }

// NewFS returns a backend on dir, creating it.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("media directory: %w", err)
	}
	return &FS{Dir: dir}, nil
}

func (f *FS) path(key string) (string, error) {
	if len(key) < 5 || filepath.Base(key) != key {
		return "", fmt.Errorf("bad media key %q", key)
	}
	return filepath.Join(f.Dir, key[:2], key[2:4], key), nil
}

// Put writes the object to a temporary file and renames it into place, so a reader
// never sees half an object and a crash leaves no partial one under the key.
func (f *FS) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if err == nil && n != size {
		err = fmt.Errorf("wrote %d bytes; want %d", n, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return os.Rename(tmp.Name(), p)
}

// Open opens the object's file.
func (f *FS) Open(_ context.Context, key string) (Object, int64, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, 0, err
	}
	file, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, 0, err
	}
	return file, st.Size(), nil
}

// Has reports whether the object's file exists.
func (f *FS) Has(_ context.Context, key string) (bool, error) {
	p, err := f.path(key)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the object's file.
func (f *FS) Delete(_ context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
