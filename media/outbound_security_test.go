package media_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/media"
)

// TestGetLegacyNeverFetchesRemote: the unauthenticated /_matrix/media/v3
// endpoints go through GetLegacy, which checks the cut-off first and serves only
// media this server already holds from before it. An anonymous caller must not
// make the server fetch from another server (the fake remote counts every
// attempt, before any connection). The HTTP side of the same rule is
// TestLegacyEndpointsDoNotFetchRemote in media/mediahttp.
func TestGetLegacyNeverFetchesRemote(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		now := time.Now()
		for _, tc := range []struct {
			name   string
			cutoff time.Time // zero: the legacy endpoints serve nothing
			origin string    // "": the local media uploaded below
			want   mxerror.Code
		}{
			{"no cut-off, local", time.Time{}, "", mxerror.NotFound},
			{"no cut-off, remote", time.Time{}, "other.test", mxerror.NotFound},
			{"local media before the cut-off", now.Add(time.Hour), "", ""},
			{"local media after the cut-off", now.Add(-time.Hour), "", mxerror.NotFound},
			{"remote media not held, cut-off in the future", now.Add(time.Hour), "other.test", mxerror.NotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				remote := &fakeRemote{body: "from afar"}
				s := newService(t, db, media.Config{LegacyCutoff: tc.cutoff}, remote)
				info, err := s.Upload(ctx, "@alice:local.test", "text/plain", "a.txt", strings.NewReader("hello"))
				if err != nil {
					t.Fatalf("Upload: %v", err)
				}
				origin, id := serverName, info.MediaID
				if tc.origin != "" {
					origin, id = tc.origin, "remote-"+strings.ReplaceAll(tc.name, " ", "")
				}
				got, err := s.GetLegacy(ctx, origin, id)
				if errcode(err) != tc.want || (tc.want == "" && err != nil) {
					t.Errorf("GetLegacy(%s/%s) = %v; want %q", origin, id, err, tc.want)
				}
				if tc.want == "" && got.MediaID != id {
					t.Errorf("GetLegacy(%s/%s) = %+v; want that media", origin, id, got)
				}
				if n := remote.fetches.Load(); n != 0 {
					t.Errorf("GetLegacy(%s/%s) fetched from the remote %d times; want 0", origin, id, n)
				}
			})
		}
	})
}
