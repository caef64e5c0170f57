package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Remote fetches media that other servers hold; the federation front-end provides
// it (SetRemote), so this package never imports a front-end.
type Remote interface {
	// FetchMedia returns the bytes of mxc://origin/mediaID, its content type and
	// file name. The caller closes body.
	FetchMedia(ctx context.Context, origin, mediaID string) (contentType, fileName string, body io.ReadCloser, err error)
}

// SetRemote installs the way to fetch other servers' media.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// remoteFetches makes concurrent requests for the same remote media wait for one
// download instead of each starting their own.
type remoteFetches struct {
	mu       sync.Mutex
	inFlight map[string]*fetch
}

type fetch struct {
	done chan struct{}
	err  error
}

// fetchRemote downloads remote media once, stores it like an upload (size limit,
// hashing, de-duplication) and records it, so later requests are served locally.
func (s *Service) fetchRemote(ctx context.Context, origin, mediaID string) (Info, error) {
	key := origin + "/" + mediaID
	s.fetches.mu.Lock()
	if s.fetches.inFlight == nil {
		s.fetches.inFlight = map[string]*fetch{}
	}
	f, waiting := s.fetches.inFlight[key]
	if !waiting {
		f = &fetch{done: make(chan struct{})}
		s.fetches.inFlight[key] = f
	}
	s.fetches.mu.Unlock()
	if waiting {
		select {
		case <-f.done:
		case <-ctx.Done():
			return Info{}, ctx.Err()
		}
		if f.err != nil {
			return Info{}, f.err
		}
		return s.row(ctx, origin, mediaID)
	}
	f.err = s.download(ctx, origin, mediaID)
	close(f.done)
	s.fetches.mu.Lock()
	delete(s.fetches.inFlight, key)
	s.fetches.mu.Unlock()
	if f.err != nil {
		return Info{}, f.err
	}
	return s.row(ctx, origin, mediaID)
}

func (s *Service) download(ctx context.Context, origin, mediaID string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	contentType, name, body, err := s.remote.FetchMedia(ctx, origin, mediaID)
	if err != nil {
		var mx *mxerror.Error
		if errors.As(err, &mx) {
			return err
		}
		return &mxerror.Error{Code: mxerror.NotFound, Message: fmt.Sprintf("media not found on %s: %v", origin, err), Status: 502}
	}
	defer body.Close()
	info := Info{Origin: origin, MediaID: mediaID, UploadName: name}
	if err := s.ingest(ctx, &info, contentType, body); err != nil {
		return err
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO media (origin, media_id, content_type, upload_name, size, sha256, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (origin, media_id) DO NOTHING`,
		origin, mediaID, info.ContentType, info.UploadName, info.Size, info.SHA256, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("record remote media: %w", err)
	}
	return nil
}
