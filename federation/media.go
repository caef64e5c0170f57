package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/media"
)

// FetchMedia downloads another server's media through the authenticated federation
// endpoint (multipart: JSON metadata, then the bytes or a redirect to them), falling
// back to the unauthenticated /_matrix/media/v3/download that servers from before
// Matrix 1.11 serve.
func (s *Service) FetchMedia(ctx context.Context, origin, mediaID string) (string, string, io.ReadCloser, error) {
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(origin)); !ok || origin == s.cfg.ServerName {
		return "", "", nil, mxerror.New(mxerror.InvalidParam, "invalid media origin %q", origin)
	}
	resp, err := s.mediaClient.DownloadMedia(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(origin), mediaID)
	if err == nil && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest) && isUnrecognized(resp) {
		resp, err = s.plain.CreateMediaDownloadRequest(ctx, spec.ServerName(origin), mediaID)
		if err == nil && resp.StatusCode == http.StatusOK {
			return resp.Header.Get("Content-Type"), fileName(resp.Header.Get("Content-Disposition")), resp.Body, nil
		}
	}
	if err != nil {
		return "", "", nil, refusedMedia(origin, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return "", "", nil, mxerror.New(mxerror.NotFound, "media not found on %s", origin)
		}
		return "", "", nil, fmt.Errorf("media download from %s: status %d", origin, resp.StatusCode)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("media download from %s: not multipart/mixed", origin)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	if _, err := mr.NextPart(); err != nil { // the metadata part: empty for now
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("media download from %s: %w", origin, err)
	}
	part, err := mr.NextPart()
	if err != nil {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("media download from %s: %w", origin, err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
		if err != nil {
			return "", "", nil, err
		}
		r2, err := s.redirects.Do(req)
		if err != nil {
			return "", "", nil, refusedMedia(origin, err)
		}
		if r2.StatusCode != http.StatusOK {
			r2.Body.Close()
			return "", "", nil, fmt.Errorf("media redirect from %s: status %d", origin, r2.StatusCode)
		}
		return r2.Header.Get("Content-Type"), fileName(r2.Header.Get("Content-Disposition")), r2.Body, nil
	}
	return part.Header.Get("Content-Type"), fileName(part.Header.Get("Content-Disposition")),
		readCloser{Reader: part, Closer: resp.Body}, nil
}

// refusedMedia turns the guard's refusal into M_FORBIDDEN, so the client learns
// the media will not be fetched rather than that its server is down.
func refusedMedia(origin string, err error) error {
	if errors.Is(err, outbound.ErrRefused) {
		return mxerror.New(mxerror.Forbidden, "media of %s cannot be fetched from this server", origin)
	}
	return err
}

type readCloser struct {
	io.Reader
	io.Closer
}

func isUnrecognized(resp *http.Response) bool {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	var e struct {
		ErrCode string `json:"errcode"`
	}
	json.Unmarshal(body, &e)
	return e.ErrCode == "M_UNRECOGNIZED" || e.ErrCode == ""
}

func fileName(disposition string) string {
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// mediaDownload serves this server's media to another server (MSC3916): a
// multipart/mixed body of the metadata (an empty JSON object) and the bytes.
func (s *Service) mediaDownload(r *fedRequest) (any, error) {
	info, err := s.deps.Media.Get(r.Context(), s.cfg.ServerName, r.Vars["mediaId"])
	if err != nil {
		return nil, err
	}
	obj, _, err := s.deps.Media.Open(r.Context(), info)
	if err != nil {
		return nil, err
	}
	return multipartMedia(obj, info.ContentType, info.UploadName), nil
}

// mediaThumbnail serves a thumbnail of this server's media to another server
// (spec v1.11), made or reused exactly as for local clients.
func (s *Service) mediaThumbnail(r *fedRequest) (any, error) {
	q, err := media.ParseThumbnailQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	info, err := s.deps.Media.Get(r.Context(), s.cfg.ServerName, r.Vars["mediaId"])
	if err != nil {
		return nil, err
	}
	t, err := s.deps.Media.Thumbnail(r.Context(), info, q.Width, q.Height, q.Method, q.Animated)
	if err != nil {
		return nil, err
	}
	obj, _, err := s.deps.Media.OpenThumbnail(r.Context(), t)
	if err != nil {
		return nil, err
	}
	return multipartMedia(obj, t.ContentType, ""), nil
}

// multipartMedia answers a federation media request: multipart/mixed with an
// empty JSON metadata part and the bytes.
func multipartMedia(obj io.ReadCloser, contentType, uploadName string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		defer obj.Close()
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		meta.Write([]byte("{}"))
		h := textproto.MIMEHeader{"Content-Type": {contentType}}
		if uploadName != "" {
			if d := mime.FormatMediaType("attachment", map[string]string{"filename": uploadName}); d != "" {
				h.Set("Content-Disposition", d)
			}
		}
		part, _ := mw.CreatePart(h)
		if _, err := io.Copy(part, obj); err != nil {
			return // the other server sees a truncated body and retries
		}
		mw.Close()
	})
}
