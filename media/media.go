// Package media is the media repository: uploads streamed into a storage backend,
// thumbnails, URL previews, media fetched from other servers and the admin
// operations. The rules live in the Service, so every front-end (the Matrix media
// API in media/mediahttp, the native protocol, federation) gets the same ones;
// this package imports no front-end and serves no HTTP itself.
package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/media/store"
	"github.com/hongyan/hongyan/media/thumbnail"
)

// Config is the media repository's configuration.
type Config struct {
	ServerName string
	// MaxUploadBytes bounds one upload.
	MaxUploadBytes int64
	// TempDir holds uploads while they are hashed, before they enter the backend.
	TempDir string
	// LegacyCutoff: media created before it are also served by the unauthenticated
	// /_matrix/media/v3 download and thumbnail endpoints (zero: none are), as Synapse
	// does for media that predates authenticated media.
	LegacyCutoff time.Time
	// MaxThumbnailPixels bounds the images that are thumbnailed.
	MaxThumbnailPixels int64
	// PendingLifetime is how long an ID from /create waits for its upload.
	PendingLifetime time.Duration
}

// Service is the media repository.
type Service struct {
	db      *storage.DB
	backend store.Backend
	cfg     Config
	// thumbs bounds concurrent thumbnail generation: decoding is CPU- and
	// memory-heavy, and a burst of requests must queue rather than exhaust both.
	thumbs chan struct{}
	// remote fetches other servers' media; nil without federation.
	remote  Remote
	fetches remoteFetches
}

// New returns the media repository over db and backend.
func New(db *storage.DB, backend store.Backend, cfg Config) *Service {
	if cfg.MaxThumbnailPixels == 0 {
		cfg.MaxThumbnailPixels = 40_000_000
	}
	if cfg.PendingLifetime == 0 {
		cfg.PendingLifetime = 24 * time.Hour
	}
	return &Service{db: db, backend: backend, cfg: cfg, thumbs: make(chan struct{}, 2)}
}

// Config returns the configuration the service runs with, defaults filled in, so
// a front-end can announce the upload limit and refuse what is plainly too large
// before reading it.
func (s *Service) Config() Config { return s.cfg }

// Info describes one media item.
type Info struct {
	Origin, MediaID, Uploader, ContentType, UploadName, SHA256 string
	Size, CreatedTS                                            int64
	Pending, Quarantined                                       bool
}

// MXC is the item's content URI.
func (i Info) MXC() string { return "mxc://" + i.Origin + "/" + i.MediaID }

func newMediaID() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Upload stores body as new media of uploader and returns its info.
func (s *Service) Upload(ctx context.Context, uploader, contentType, name string, body io.Reader) (Info, error) {
	info := Info{Origin: s.cfg.ServerName, MediaID: newMediaID(), Uploader: uploader, UploadName: name, CreatedTS: time.Now().UnixMilli()}
	if err := s.ingest(ctx, &info, contentType, body); err != nil {
		return Info{}, err
	}
	_, err := s.db.Exec(ctx, `INSERT INTO media (origin, media_id, uploader, content_type, upload_name, size, sha256, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, info.Origin, info.MediaID, info.Uploader, info.ContentType, info.UploadName,
		info.Size, info.SHA256, info.CreatedTS)
	if err != nil {
		return Info{}, fmt.Errorf("record media: %w", err)
	}
	return info, nil
}

// Create reserves a media ID for an upload that follows (asynchronous uploads) and
// returns it with the time by which the upload must arrive.
func (s *Service) Create(ctx context.Context, uploader string) (Info, int64, error) {
	now := time.Now()
	info := Info{Origin: s.cfg.ServerName, MediaID: newMediaID(), Uploader: uploader, CreatedTS: now.UnixMilli(), Pending: true}
	expires := now.Add(s.cfg.PendingLifetime).UnixMilli()
	_, err := s.db.Exec(ctx, `INSERT INTO media (origin, media_id, uploader, created_ts, upload_pending, expires_ts)
		VALUES ($1, $2, $3, $4, TRUE, $5)`, info.Origin, info.MediaID, uploader, info.CreatedTS, expires)
	if err != nil {
		return Info{}, 0, fmt.Errorf("reserve media: %w", err)
	}
	return info, expires, nil
}

// UploadTo fills a media ID reserved by Create.
func (s *Service) UploadTo(ctx context.Context, uploader, origin, mediaID, contentType, name string, body io.Reader) error {
	info, err := s.row(ctx, origin, mediaID)
	if err != nil {
		return err
	}
	switch {
	case info.Uploader != uploader:
		return mxerror.New(mxerror.Forbidden, "this media ID was reserved by another user")
	case !info.Pending:
		return &mxerror.Error{Code: "M_CANNOT_OVERWRITE_MEDIA", Message: "media already uploaded", Status: http.StatusConflict}
	}
	info.UploadName = name
	if err := s.ingest(ctx, &info, contentType, body); err != nil {
		return err
	}
	res, err := s.db.Exec(ctx, `UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6, upload_pending = FALSE
		WHERE origin = $1 AND media_id = $2 AND upload_pending`, origin, mediaID, info.ContentType, info.UploadName, info.Size, info.SHA256)
	if err != nil {
		return fmt.Errorf("record media: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return &mxerror.Error{Code: "M_CANNOT_OVERWRITE_MEDIA", Message: "media already uploaded", Status: http.StatusConflict}
	}
	return nil
}

// ingest streams body to a temporary file while hashing it and enforcing the size
// limit, then moves it into the backend under its hash (once per distinct content).
// Nothing is left behind when it fails.
func (s *Service) ingest(ctx context.Context, info *Info, contentType string, body io.Reader) error {
	tmp, err := os.CreateTemp(s.cfg.TempDir, "upload-*")
	if err != nil {
		return fmt.Errorf("upload temp file: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(body, s.cfg.MaxUploadBytes+1))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) || n > s.cfg.MaxUploadBytes {
		return mxerror.New(mxerror.TooLarge, "upload is larger than %d bytes", s.cfg.MaxUploadBytes)
	}
	if err != nil {
		return mxerror.New(mxerror.Unknown, "upload interrupted")
	}
	info.Size, info.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	info.ContentType = contentType
	if info.ContentType == "" || info.ContentType == "application/octet-stream" {
		head := make([]byte, 512)
		m, _ := io.ReadFull(tmp, head)
		info.ContentType = http.DetectContentType(head[:m])
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	if err := s.backend.Put(ctx, info.SHA256, tmp, n); err != nil {
		return fmt.Errorf("store upload: %w", err)
	}
	return nil
}

func (s *Service) row(ctx context.Context, origin, mediaID string) (Info, error) {
	i := Info{Origin: origin, MediaID: mediaID}
	err := s.db.QueryRow(ctx, `SELECT uploader, content_type, upload_name, size, sha256, created_ts, upload_pending, quarantined
		FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID).
		Scan(&i.Uploader, &i.ContentType, &i.UploadName, &i.Size, &i.SHA256, &i.CreatedTS, &i.Pending, &i.Quarantined)
	if errors.Is(err, sql.ErrNoRows) {
		return Info{}, mxerror.New(mxerror.NotFound, "media not found")
	}
	if err != nil {
		return Info{}, fmt.Errorf("media %s/%s: %w", origin, mediaID, err)
	}
	return i, nil
}

// Get returns the info of media that can be served, fetching other servers' media
// over federation the first time it is asked for.
func (s *Service) Get(ctx context.Context, origin, mediaID string) (Info, error) {
	info, err := s.row(ctx, origin, mediaID)
	var mx *mxerror.Error
	if errors.As(err, &mx) && mx.Code == mxerror.NotFound && origin != s.cfg.ServerName && s.remote != nil {
		info, err = s.fetchRemote(ctx, origin, mediaID)
	}
	return servable(info, err)
}

// servable passes on what a row lookup found if it may be served.
func servable(info Info, err error) (Info, error) {
	if err != nil {
		return Info{}, err
	}
	switch {
	case info.Quarantined:
		return Info{}, mxerror.New(mxerror.NotFound, "media not found")
	case info.Pending:
		return Info{}, &mxerror.Error{Code: "M_NOT_YET_UPLOADED", Message: "media not uploaded yet", Status: http.StatusGatewayTimeout}
	}
	return info, nil
}

// errLegacy answers the unauthenticated endpoints for media they do not serve.
var errLegacy = mxerror.New(mxerror.NotFound, "media not found; use the authenticated endpoint /_matrix/client/v1/media")

// GetLegacy is Get for the unauthenticated /_matrix/media/v3 endpoints: only
// media this server already holds from before the cut-off. It never fetches
// from another server, so an anonymous caller cannot make this server connect
// anywhere (remote media fetched now is newer than any cut-off anyway).
func (s *Service) GetLegacy(ctx context.Context, origin, mediaID string) (Info, error) {
	if s.cfg.LegacyCutoff.IsZero() {
		return Info{}, errLegacy
	}
	info, err := servable(s.row(ctx, origin, mediaID))
	if err != nil {
		return Info{}, err
	}
	if !s.LegacyAllowed(info) {
		return Info{}, errLegacy
	}
	return info, nil
}

// LegacyAllowed reports whether the unauthenticated endpoints may serve info.
func (s *Service) LegacyAllowed(info Info) bool {
	return !s.cfg.LegacyCutoff.IsZero() && info.CreatedTS < s.cfg.LegacyCutoff.UnixMilli()
}

// Open returns the media's bytes.
func (s *Service) Open(ctx context.Context, info Info) (store.Object, int64, error) {
	obj, size, err := s.backend.Open(ctx, info.SHA256)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, mxerror.New(mxerror.NotFound, "media content is missing")
	}
	return obj, size, err
}

// Thumbnail is a generated thumbnail.
type Thumbnail struct {
	ContentType string
	SHA256      string
	Size        int64
}

// Thumbnail returns a thumbnail of the media for the requested size, generating and
// caching it on first request.
// With animated, an animated GIF gets an animated thumbnail (other images a still
// one, which the spec allows).
func (s *Service) Thumbnail(ctx context.Context, info Info, width, height int, method string, animated bool) (Thumbnail, error) {
	size := thumbnail.Pick(width, height, method)
	cacheMethod := size.Method
	if animated && info.ContentType == "image/gif" {
		cacheMethod += "+animated"
	} else {
		animated = false
	}
	var t Thumbnail
	err := s.db.QueryRow(ctx, `SELECT content_type, sha256, size FROM media_thumbnails
		WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`,
		info.Origin, info.MediaID, size.Width, size.Height, cacheMethod).Scan(&t.ContentType, &t.SHA256, &t.Size)
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("thumbnail lookup: %w", err)
	}
	if !strings.HasPrefix(info.ContentType, "image/") {
		return t, &mxerror.Error{Code: mxerror.Unknown, Message: "cannot thumbnail " + info.ContentType, Status: http.StatusBadRequest}
	}
	select {
	case s.thumbs <- struct{}{}:
		defer func() { <-s.thumbs }()
	case <-ctx.Done():
		return t, ctx.Err()
	}
	obj, _, err := s.Open(ctx, info)
	if err != nil {
		return t, err
	}
	defer obj.Close()
	generate := thumbnail.Generate
	if animated {
		generate = thumbnail.GenerateAnimated
	}
	data, contentType, err := generate(obj, size, s.cfg.MaxThumbnailPixels)
	switch {
	case errors.Is(err, thumbnail.ErrTooLarge):
		return t, &mxerror.Error{Code: mxerror.TooLarge, Message: "image too large to thumbnail", Status: http.StatusBadRequest}
	case errors.Is(err, thumbnail.ErrNotImage):
		return t, &mxerror.Error{Code: mxerror.Unknown, Message: "cannot thumbnail this file", Status: http.StatusBadRequest}
	case err != nil:
		return t, err
	}
	sum := sha256.Sum256(data)
	t = Thumbnail{ContentType: contentType, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
	if err := s.backend.Put(ctx, t.SHA256, bytes.NewReader(data), t.Size); err != nil {
		return t, fmt.Errorf("store thumbnail: %w", err)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type, size, sha256)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		info.Origin, info.MediaID, size.Width, size.Height, cacheMethod, t.ContentType, t.Size, t.SHA256)
	if err != nil {
		slog.Warn("cache thumbnail", "media", info.MXC(), "err", err)
	}
	return t, nil
}

// OpenThumbnail returns a thumbnail's bytes.
func (s *Service) OpenThumbnail(ctx context.Context, t Thumbnail) (store.Object, int64, error) {
	return s.backend.Open(ctx, t.SHA256)
}

// Quarantine hides media from everyone; its bytes stay for the admin to inspect.
func (s *Service) Quarantine(ctx context.Context, origin, mediaID string) error {
	res, err := s.db.Exec(ctx, `UPDATE media SET quarantined = TRUE WHERE origin = $1 AND media_id = $2`, origin, mediaID)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerror.New(mxerror.NotFound, "media not found")
	}
	return nil
}

// Delete removes media and its thumbnails, and their bytes once nothing else
// refers to them.
func (s *Service) Delete(ctx context.Context, origin, mediaID string) error {
	info, err := s.row(ctx, origin, mediaID)
	if err != nil {
		return err
	}
	var thumbs []string
	rows, err := s.db.Query(ctx, `SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID)
	if err != nil {
		return err
	}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return err
		}
		thumbs = append(thumbs, h)
	}
	rows.Close()
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete media: %w", err)
	}
	for _, h := range append(thumbs, info.SHA256) {
		if h == "" {
			continue
		}
		var users int
		if err := s.db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)`, h).Scan(&users); err != nil {
			return err
		}
		if users == 0 {
			if err := s.backend.Delete(ctx, h); err != nil {
				return fmt.Errorf("delete media bytes: %w", err)
			}
		}
	}
	return nil
}

// DeleteOlderThan deletes local media created before ts and returns their IDs.
func (s *Service) DeleteOlderThan(ctx context.Context, ts int64) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT media_id FROM media WHERE origin = $1 AND created_ts < $2`, s.cfg.ServerName, ts)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if err := s.Delete(ctx, s.cfg.ServerName, id); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// Usage is a user's media: how many items and bytes.
func (s *Service) Usage(ctx context.Context, userID string) (count, bytes int64, err error) {
	err = s.db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM media WHERE uploader = $1`, userID).Scan(&count, &bytes)
	return count, bytes, err
}

// ThumbnailQuery is a thumbnail request's parameters, as the client and the
// federation media APIs both take them.
type ThumbnailQuery struct {
	Width, Height int
	// Method is crop, scale or "" (the server's choice).
	Method   string
	Animated bool
}

// ParseThumbnailQuery reads width, height, method and animated from a query
// string; anything invalid is M_INVALID_PARAM.
func ParseThumbnailQuery(q url.Values) (ThumbnailQuery, error) {
	width, werr := strconv.Atoi(q.Get("width"))
	height, herr := strconv.Atoi(q.Get("height"))
	if werr != nil || herr != nil || width <= 0 || height <= 0 {
		return ThumbnailQuery{}, mxerror.New(mxerror.InvalidParam, "width and height must be positive integers")
	}
	method := q.Get("method")
	if method != "" && method != "crop" && method != "scale" {
		return ThumbnailQuery{}, mxerror.New(mxerror.InvalidParam, "method must be crop or scale")
	}
	return ThumbnailQuery{Width: width, Height: height, Method: method, Animated: q.Get("animated") == "true"}, nil
}
