// Package mediahttp is the Matrix media API over HTTP: the client and admin routes
// of the media repository. It only translates requests into calls on media.Service,
// where the rules live, so only the composition root (homeserver) imports it; every
// other front-end that needs media imports package media.
package mediahttp

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
	"github.com/hongyan/hongyan/media"
	"github.com/hongyan/hongyan/media/store"
)

// inlineTypes are served inline; everything else is an attachment, so a browser
// never renders an uploaded HTML or SVG file as a page of this server.
var inlineTypes = map[string]bool{
	"text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// Register adds the media API's routes; previews fetch through p.
func Register(router *mux.Router, api *httpapi.API, s *media.Service, p *media.Previewer) {
	h := &handlers{s: s, previewer: p}
	// Uploads stream; their limit is enforced while reading. The route limit sits
	// just above it so the service, not the edge, answers M_TOO_LARGE.
	upload := httpapi.BodyLimit(s.Config().MaxUploadBytes + 1)
	mv3 := httpapi.Subrouter(router, "/_matrix/media/{version:(?:r0|v3)}")
	api.Handle(mv3, http.MethodPost, "/upload", h.upload, httpapi.Authed, upload, httpapi.RateLimited)
	api.Handle(mv3, http.MethodPut, "/upload/{server}/{mediaID}", h.uploadTo, httpapi.Authed, upload, httpapi.RateLimited)
	api.Handle(mv3, http.MethodGet, "/config", h.config, httpapi.Authed)
	api.Handle(mv3, http.MethodGet, "/download/{server}/{mediaID}", h.legacyDownload)
	api.Handle(mv3, http.MethodGet, "/download/{server}/{mediaID}/{fileName}", h.legacyDownload)
	api.Handle(mv3, http.MethodGet, "/thumbnail/{server}/{mediaID}", h.legacyThumbnail)
	// The pre-1.11 path older clients and Sytest use; the same previewer.
	api.Handle(mv3, http.MethodGet, "/preview_url", h.previewURL, httpapi.Authed, httpapi.RateLimited)

	mv1 := httpapi.Subrouter(router, "/_matrix/media/v1")
	api.Handle(mv1, http.MethodPost, "/create", h.create, httpapi.Authed, httpapi.RateLimited)

	cv1 := httpapi.Subrouter(router, "/_matrix/client/v1/media")
	api.Handle(cv1, http.MethodGet, "/config", h.config, httpapi.Authed)
	api.Handle(cv1, http.MethodGet, "/download/{server}/{mediaID}", h.download, httpapi.Authed)
	api.Handle(cv1, http.MethodGet, "/download/{server}/{mediaID}/{fileName}", h.download, httpapi.Authed)
	api.Handle(cv1, http.MethodGet, "/thumbnail/{server}/{mediaID}", h.thumbnail, httpapi.Authed)
	api.Handle(cv1, http.MethodGet, "/preview_url", h.previewURL, httpapi.Authed, httpapi.RateLimited)

	admin := httpapi.Subrouter(router, "/_synapse/admin/v1")
	api.Handle(admin, http.MethodPost, "/media/quarantine/{server}/{mediaID}", h.quarantine, httpapi.Authed)
	api.Handle(admin, http.MethodDelete, "/media/{server}/{mediaID}", h.deleteMedia, httpapi.Authed)
	api.Handle(admin, http.MethodPost, "/media/delete", h.deleteOld, httpapi.Authed)
	api.Handle(admin, http.MethodGet, "/users/{userID}/media", h.usage, httpapi.Authed)
}

type handlers struct {
	s         *media.Service
	previewer *media.Previewer
}

func (h *handlers) config(*httpapi.Request) (any, error) {
	return map[string]any{"m.upload.size": h.s.Config().MaxUploadBytes}, nil
}

// declaredTooLarge refuses an upload whose declared length is over the limit
// before a byte of it is read.
func (h *handlers) declaredTooLarge(r *httpapi.Request) error {
	if r.ContentLength > h.s.Config().MaxUploadBytes {
		return mxerror.New(mxerror.TooLarge, "upload is larger than %d bytes", h.s.Config().MaxUploadBytes)
	}
	return nil
}

func (h *handlers) upload(r *httpapi.Request) (any, error) {
	if err := h.declaredTooLarge(r); err != nil {
		return nil, err
	}
	info, err := h.s.Upload(r.Context(), r.Caller.UserID, r.Header.Get("Content-Type"), r.URL.Query().Get("filename"), r.Request.Body)
	if err != nil {
		return nil, err
	}
	return map[string]string{"content_uri": info.MXC()}, nil
}

func (h *handlers) create(r *httpapi.Request) (any, error) {
	info, expires, err := h.s.Create(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"content_uri": info.MXC(), "unused_expires_at": expires}, nil
}

func (h *handlers) uploadTo(r *httpapi.Request) (any, error) {
	if r.Vars["server"] != h.s.Config().ServerName {
		return nil, mxerror.New(mxerror.NotFound, "media not found")
	}
	if err := h.declaredTooLarge(r); err != nil {
		return nil, err
	}
	err := h.s.UploadTo(r.Context(), r.Caller.UserID, r.Vars["server"], r.Vars["mediaID"], r.Header.Get("Content-Type"),
		r.URL.Query().Get("filename"), r.Request.Body)
	if err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

func (h *handlers) download(r *httpapi.Request) (any, error) {
	info, err := h.s.Get(r.Context(), r.Vars["server"], r.Vars["mediaID"])
	if err != nil {
		return nil, err
	}
	return h.serve(r.Context(), info, r.Vars["fileName"])
}

// legacyDownload serves the unauthenticated endpoint only for media from before
// the cut-off that this server holds; newer media answers as if missing, like
// Synapse, and nothing is fetched from other servers for an anonymous caller.
func (h *handlers) legacyDownload(r *httpapi.Request) (any, error) {
	info, err := h.s.GetLegacy(r.Context(), r.Vars["server"], r.Vars["mediaID"])
	if err != nil {
		return nil, err
	}
	return h.serve(r.Context(), info, r.Vars["fileName"])
}

func (h *handlers) serve(ctx context.Context, info media.Info, fileName string) (any, error) {
	obj, _, err := h.s.Open(ctx, info)
	if err != nil {
		return nil, err
	}
	if fileName == "" {
		fileName = info.UploadName
	}
	return serveObject(obj, info.ContentType, fileName, info.CreatedTS), nil
}

// serveObject writes the object with the safe-serving headers; http.ServeContent
// answers Range requests so players can seek.
func serveObject(obj store.Object, contentType, fileName string, createdTS int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer obj.Close()
		hd := w.Header()
		if contentType == "" {
			contentType = "application/octet-stream"
		}
		hd.Set("Content-Type", contentType)
		base, _, _ := mime.ParseMediaType(contentType)
		disposition := "attachment"
		if inlineTypes[base] {
			disposition = "inline"
		}
		if fileName != "" {
			disposition = mime.FormatMediaType(disposition, map[string]string{"filename": fileName})
			if disposition == "" { // a name FormatMediaType cannot encode
				disposition = "attachment"
			}
		}
		hd.Set("Content-Disposition", disposition)
		hd.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Cross-Origin-Resource-Policy", "cross-origin")
		hd.Set("Cache-Control", "private, max-age=31536000, immutable")
		http.ServeContent(w, r, "", time.UnixMilli(createdTS), obj)
	})
}

func (h *handlers) thumbnail(r *httpapi.Request) (any, error) {
	info, err := h.s.Get(r.Context(), r.Vars["server"], r.Vars["mediaID"])
	if err != nil {
		return nil, err
	}
	return h.serveThumbnail(r, info)
}

func (h *handlers) legacyThumbnail(r *httpapi.Request) (any, error) {
	info, err := h.s.GetLegacy(r.Context(), r.Vars["server"], r.Vars["mediaID"])
	if err != nil {
		return nil, err
	}
	return h.serveThumbnail(r, info)
}

func (h *handlers) serveThumbnail(r *httpapi.Request, info media.Info) (any, error) {
	q, err := media.ParseThumbnailQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	t, err := h.s.Thumbnail(r.Context(), info, q.Width, q.Height, q.Method, q.Animated)
	if err != nil {
		return nil, err
	}
	obj, _, err := h.s.OpenThumbnail(r.Context(), t)
	if err != nil {
		return nil, err
	}
	return serveObject(obj, t.ContentType, "", info.CreatedTS), nil
}

func adminOnly(r *httpapi.Request) error {
	if !r.Caller.IsAdmin {
		return mxerror.New(mxerror.Forbidden, "you are not a server admin")
	}
	return nil
}

func (h *handlers) quarantine(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	return map[string]any{}, h.s.Quarantine(r.Context(), r.Vars["server"], r.Vars["mediaID"])
}

func (h *handlers) deleteMedia(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	if err := h.s.Delete(r.Context(), r.Vars["server"], r.Vars["mediaID"]); err != nil {
		return nil, err
	}
	return map[string]any{"deleted_media": []string{r.Vars["mediaID"]}, "total": 1}, nil
}

func (h *handlers) deleteOld(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	ts, err := strconv.ParseInt(r.URL.Query().Get("before_ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, mxerror.New(mxerror.MissingParam, "before_ts must be a timestamp in milliseconds")
	}
	ids, err := h.s.DeleteOlderThan(r.Context(), ts)
	if err != nil {
		return nil, err
	}
	if ids == nil {
		ids = []string{}
	}
	return map[string]any{"deleted_media": ids, "total": len(ids)}, nil
}

func (h *handlers) usage(r *httpapi.Request) (any, error) {
	if err := adminOnly(r); err != nil {
		return nil, err
	}
	userID := r.Vars["userID"]
	if !strings.HasPrefix(userID, "@") {
		return nil, mxerror.New(mxerror.InvalidParam, "not a user ID: %q", userID)
	}
	count, bytes, err := h.s.Usage(r.Context(), userID)
	if err != nil {
		return nil, fmt.Errorf("media usage: %w", err)
	}
	return map[string]any{"user_id": userID, "media_count": count, "media_length": bytes}, nil
}

func (h *handlers) previewURL(r *httpapi.Request) (any, error) {
	raw := r.URL.Query().Get("url")
	if raw == "" {
		return nil, mxerror.New(mxerror.MissingParam, "url is required")
	}
	return h.s.Preview(r.Context(), h.previewer, r.Caller.UserID, raw)
}
