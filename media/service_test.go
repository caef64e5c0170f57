package media_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/media"
	"github.com/hongyan/hongyan/media/store"
)

// These tests drive the Service directly, without an HTTP server; the tests of
// the Matrix media API over HTTP live in media/mediahttp.

const serverName = "local.test"

// newService returns a media service named local.test over db, with a fresh
// filesystem backend; remote, if not nil, serves other servers' media.
func newService(t *testing.T, db *storage.DB, cfg media.Config, remote media.Remote) *media.Service {
	t.Helper()
	backend, err := store.NewFS(t.TempDir())
	if err != nil {
		t.Fatalf("NewFS: %v", err)
	}
	cfg.ServerName = serverName
	if cfg.MaxUploadBytes == 0 {
		cfg.MaxUploadBytes = 1 << 20
	}
	cfg.TempDir = t.TempDir()
	s := media.New(db, backend, cfg)
	if remote != nil {
		s.SetRemote(remote)
	}
	return s
}

// fakeRemote serves every remote media ID with the same bytes and counts the
// fetches; a test that must not fetch checks the count stays 0. It never opens
// a connection.
type fakeRemote struct {
	body    string
	err     error
	fetches atomic.Int32
	// release, if not nil, holds every fetch until it is closed.
	release chan struct{}
}

func (f *fakeRemote) FetchMedia(ctx context.Context, origin, mediaID string) (string, string, io.ReadCloser, error) {
	f.fetches.Add(1)
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return "", "", nil, ctx.Err()
		}
	}
	if f.err != nil {
		return "", "", nil, f.err
	}
	return "text/plain", "remote.txt", io.NopCloser(strings.NewReader(f.body)), nil
}

// errcode is the Matrix errcode err carries, or "" if it carries none.
func errcode(err error) mxerror.Code {
	var mx *mxerror.Error
	if errors.As(err, &mx) {
		return mx.Code
	}
	return ""
}

func readAll(t *testing.T, s *media.Service, info media.Info) string {
	t.Helper()
	obj, _, err := s.Open(context.Background(), info)
	if err != nil {
		t.Fatalf("Open(%s): %v", info.MXC(), err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %s: %v", info.MXC(), err)
	}
	return string(b)
}

func TestUploadGetOpen(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newService(t, db, media.Config{MaxUploadBytes: 8}, nil)
		info, err := s.Upload(ctx, "@alice:local.test", "text/plain", "a.txt", strings.NewReader("hello"))
		if err != nil {
			t.Fatalf("Upload: %v", err)
		}
		got, err := s.Get(ctx, serverName, info.MediaID)
		if err != nil {
			t.Fatalf("Get(%s): %v", info.MXC(), err)
		}
		if got.ContentType != "text/plain" || got.UploadName != "a.txt" || got.Size != 5 || got.Uploader != "@alice:local.test" {
			t.Errorf("Get(%s) = %+v; want text/plain a.txt, 5 bytes, uploaded by alice", info.MXC(), got)
		}
		if body := readAll(t, s, got); body != "hello" {
			t.Errorf("Open(%s) = %q; want %q", info.MXC(), body, "hello")
		}

		_, err = s.Upload(ctx, "@alice:local.test", "text/plain", "b.txt", strings.NewReader("123456789"))
		if errcode(err) != mxerror.TooLarge {
			t.Errorf("Upload(9 bytes, limit 8) = %v; want %s", err, mxerror.TooLarge)
		}

		if err := s.Quarantine(ctx, serverName, info.MediaID); err != nil {
			t.Fatalf("Quarantine: %v", err)
		}
		if _, err := s.Get(ctx, serverName, info.MediaID); errcode(err) != mxerror.NotFound {
			t.Errorf("Get(quarantined) = %v; want %s", err, mxerror.NotFound)
		}
		if _, err := s.Get(ctx, serverName, "nosuchmedia"); errcode(err) != mxerror.NotFound {
			t.Errorf("Get(unknown local) = %v; want %s", err, mxerror.NotFound)
		}
	})
}

// TestGetStoresRemoteMedia: concurrent requests for the same remote media all
// get it, and once it is stored later ones are served without asking again.
// Requests that find the fetch in flight share it; one that looked the row up
// before the fetch stored it but asks for the fetch after it ended starts a
// second one (a known window in fetchRemote), so the count while concurrent is
// not asserted to be 1.
func TestGetStoresRemoteMedia(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		remote := &fakeRemote{body: "from afar", release: make(chan struct{})}
		s := newService(t, db, media.Config{}, remote)
		const n = 5
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.Get(ctx, "other.test", "abc")
			}()
		}
		// Release once the first fetch has started.
		deadline := time.Now().Add(10 * time.Second)
		for remote.fetches.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no fetch started")
			}
			time.Sleep(time.Millisecond)
		}
		close(remote.release)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Get #%d: %v", i, err)
			}
		}
		fetched := remote.fetches.Load()
		info, err := s.Get(ctx, "other.test", "abc")
		if err != nil {
			t.Fatalf("Get after fetch: %v", err)
		}
		if got := remote.fetches.Load(); got != fetched {
			t.Errorf("remote fetches after a Get of stored media = %d; want %d (no new fetch)", got, fetched)
		}
		if body := readAll(t, s, info); body != "from afar" || info.UploadName != "remote.txt" {
			t.Errorf("remote media = %q named %q; want %q named remote.txt", body, info.UploadName, "from afar")
		}
	})
}

func TestGetRemoteFailures(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		for _, tc := range []struct {
			name   string
			remote *fakeRemote
			want   mxerror.Code
		}{
			{"unreachable", &fakeRemote{err: errors.New("connection refused")}, mxerror.NotFound},
			{"matrix error passed on", &fakeRemote{err: mxerror.New(mxerror.Forbidden, "no")}, mxerror.Forbidden},
			{"too large", &fakeRemote{body: "123456789"}, mxerror.TooLarge},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := newService(t, db, media.Config{MaxUploadBytes: 8}, tc.remote)
				id := strings.ReplaceAll(tc.name, " ", "")
				for range 2 { // nothing is recorded, so the second Get asks again
					if _, err := s.Get(context.Background(), "other.test", id); errcode(err) != tc.want {
						t.Errorf("Get(other.test/%s) = %v; want %s", id, err, tc.want)
					}
				}
				if got := tc.remote.fetches.Load(); got != 2 {
					t.Errorf("remote fetches = %d; want 2", got)
				}
			})
		}
	})
}
