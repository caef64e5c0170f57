package mediahttp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// setup is a running server on one database engine and one media backend.
type setup struct {
	srv *testserver.Server
	// objects counts the objects the backend holds.
	objects func(t *testing.T) int
	// tmpDir is where uploads wait while they are hashed.
	tmpDir string
}

// backends lists the media backends a run covers: both, unless
// HONGYAN_TEST_MEDIA_BACKENDS=fs narrows them. The s3 backend needs a MinIO named by
// HONGYAN_TEST_MINIO (http://USER:PASSWORD@HOST:PORT), which scripts/test.sh starts;
// a run without it fails rather than skip.
func backends() []string {
	if os.Getenv("HONGYAN_TEST_MEDIA_BACKENDS") == "fs" {
		return []string{"fs"}
	}
	return []string{"fs", "s3"}
}

// forEachSetup runs fn on every engine × backend pair.
func forEachSetup(t *testing.T, fn func(t *testing.T, s *setup), opts ...testserver.Option) {
	for _, d := range storagetest.Engines() {
		for _, b := range backends() {
			t.Run(string(d)+"/"+b, func(t *testing.T) {
				t.Parallel()
				fn(t, start(t, d, b, opts...))
			})
		}
	}
}

func start(t testing.TB, d storage.Dialect, backend string, opts ...testserver.Option) *setup {
	t.Helper()
	s := &setup{}
	var mediaOpt testserver.Option
	switch backend {
	case "fs":
		dir := t.TempDir()
		mediaOpt = func(c *config.Config) { c.Media.Backend, c.Media.Dir = "fs", dir }
		s.objects = func(t *testing.T) int { return countFiles(t, dir) }
	case "s3":
		raw := os.Getenv("HONGYAN_TEST_MINIO")
		if raw == "" {
			t.Fatal("HONGYAN_TEST_MINIO is not set: run the tests with scripts/test.sh, which starts MinIO, " +
				"or set HONGYAN_TEST_MEDIA_BACKENDS=fs to test the local backend alone")
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("HONGYAN_TEST_MINIO: %v", err)
		}
		pass, _ := u.User.Password()
		prefix := "t" + randHex(6) + "/" // each test its own corner of the bucket
		s3 := config.S3{Endpoint: u.Host, Bucket: "hongyan-test", Prefix: prefix, AccessKey: u.User.Username(), SecretKey: pass}
		mediaOpt = func(c *config.Config) { c.Media.Backend, c.Media.S3 = "s3", s3 }
		client, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, "")})
		if err != nil {
			t.Fatal(err)
		}
		s.objects = func(t *testing.T) int {
			n := 0
			for obj := range client.ListObjects(context.Background(), s3.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
				if obj.Err != nil {
					t.Fatalf("list objects: %v", obj.Err)
				}
				n++
			}
			return n
		}
	}
	s.srv = testserver.Start(t, d, append([]testserver.Option{mediaOpt}, opts...)...)
	s.tmpDir = filepath.Join(s.srv.Config.DataDir, "tmp")
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errcode() string {
	var e struct{ ErrCode string }
	json.Unmarshal(r.body, &e)
	return e.ErrCode
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return m
}

// do sends a request as c (anonymous if c.Token is empty) with extra headers as
// name, value pairs.
func do(t testing.TB, c *testserver.Client, method, path string, body io.Reader, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, c.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, data}
}

// upload posts data and returns the server and media ID of its content URI.
func upload(t testing.TB, c *testserver.Client, contentType, name string, data []byte) (server, mediaID string) {
	t.Helper()
	path := "/_matrix/media/v3/upload"
	if name != "" {
		path += "?filename=" + url.QueryEscape(name)
	}
	r := do(t, c, "POST", path, bytes.NewReader(data), "Content-Type", contentType)
	if r.status != 200 {
		t.Fatalf("upload = %d %s", r.status, r.body)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	json.Unmarshal(r.body, &out)
	rest, ok := strings.CutPrefix(out.ContentURI, "mxc://")
	server, mediaID, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || mediaID == "" {
		t.Fatalf("content_uri %q is not an mxc URI", out.ContentURI)
	}
	return server, mediaID
}

func TestUploadDownloadHeadersAndRanges(t *testing.T) {
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		bob := s.srv.Register(t, "bob", "pw")
		text := []byte("hello, media repository")
		server, id := upload(t, alice, "text/plain", "hello.txt", text)
		if server != "localhost" {
			t.Errorf("server = %q; want localhost", server)
		}
		dl := "/_matrix/client/v1/media/download/" + server + "/" + id

		r := do(t, bob, "GET", dl, nil)
		if r.status != 200 || !bytes.Equal(r.body, text) {
			t.Fatalf("download = %d %q; want 200 %q", r.status, r.body, text)
		}
		for name, want := range map[string]string{
			"Content-Type":            "text/plain",
			"Content-Disposition":     `inline; filename=hello.txt`,
			"X-Content-Type-Options":  "nosniff",
			"Content-Security-Policy": "sandbox;",
		} {
			if got := r.header.Get(name); !strings.HasPrefix(got, want) {
				t.Errorf("%s = %q; want prefix %q", name, got, want)
			}
		}
		// A name in the path overrides the uploaded one.
		if r := do(t, bob, "GET", dl+"/other.txt", nil); r.header.Get("Content-Disposition") != "inline; filename=other.txt" {
			t.Errorf("download with name: Content-Disposition = %q", r.header.Get("Content-Disposition"))
		}
		// Range requests, for seeking in audio and video.
		r = do(t, bob, "GET", dl, nil, "Range", "bytes=7-11")
		if r.status != http.StatusPartialContent || string(r.body) != "media" || r.header.Get("Content-Range") != fmt.Sprintf("bytes 7-11/%d", len(text)) {
			t.Errorf("range = %d %q %q; want 206 \"media\"", r.status, r.body, r.header.Get("Content-Range"))
		}
		// Authenticated media needs a token; the legacy endpoint serves nothing
		// newer than the (unset) cut-off.
		if r := do(t, s.srv.Client(t), "GET", dl, nil); r.status != 401 || r.errcode() != "M_MISSING_TOKEN" {
			t.Errorf("anonymous download = %d %s; want 401 M_MISSING_TOKEN", r.status, r.body)
		}
		if r := do(t, s.srv.Client(t), "GET", "/_matrix/media/v3/download/"+server+"/"+id, nil); r.status != 404 || r.errcode() != "M_NOT_FOUND" {
			t.Errorf("legacy download = %d %s; want 404 M_NOT_FOUND", r.status, r.body)
		}
		// HTML and SVG are attachments, never rendered as a page of this server;
		// an upload without a type is sniffed.
		for _, tc := range []struct{ contentType, wantType, wantDisposition string }{
			{"text/html", "text/html", "attachment"},
			{"image/svg+xml", "image/svg+xml", "attachment"},
			{"", "text/html; charset=utf-8", "attachment"},
		} {
			_, id := upload(t, alice, tc.contentType, "", []byte("<html><script>alert(1)</script></html>"))
			r := do(t, bob, "GET", "/_matrix/client/v1/media/download/localhost/"+id, nil)
			if r.header.Get("Content-Type") != tc.wantType || r.header.Get("Content-Disposition") != tc.wantDisposition {
				t.Errorf("upload as %q served as %q, %q; want %q, %q", tc.contentType, r.header.Get("Content-Type"),
					r.header.Get("Content-Disposition"), tc.wantType, tc.wantDisposition)
			}
		}
		if r := do(t, bob, "GET", "/_matrix/client/v1/media/download/localhost/nosuchmedia", nil); r.status != 404 || r.errcode() != "M_NOT_FOUND" {
			t.Errorf("missing media = %d %s; want 404 M_NOT_FOUND", r.status, r.body)
		}
		var cfg map[string]any
		bob.MustDo("GET", "/_matrix/client/v1/media/config", nil, &cfg)
		if cfg["m.upload.size"] != float64(100<<20) {
			t.Errorf("config = %v; want m.upload.size 100 MiB", cfg)
		}
	})
}

func TestIdenticalContentStoredOnce(t *testing.T) {
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		data := bytes.Repeat([]byte("same bytes "), 1000)
		_, id1 := upload(t, alice, "text/plain", "a.txt", data)
		_, id2 := upload(t, alice, "text/plain", "b.txt", data)
		if id1 == id2 {
			t.Fatalf("two uploads got one media ID %q", id1)
		}
		if n := s.objects(t); n != 1 {
			t.Errorf("backend holds %d objects after two identical uploads; want 1", n)
		}
		// Deleting one keeps the bytes the other still needs.
		admin := makeAdmin(t, s, "root")
		admin.MustDo("DELETE", "/_synapse/admin/v1/media/localhost/"+id1, nil, nil)
		if r := do(t, alice, "GET", "/_matrix/client/v1/media/download/localhost/"+id2, nil); r.status != 200 || !bytes.Equal(r.body, data) {
			t.Errorf("download of the twin after deleting one = %d", r.status)
		}
		admin.MustDo("DELETE", "/_synapse/admin/v1/media/localhost/"+id2, nil, nil)
		if n := s.objects(t); n != 0 {
			t.Errorf("backend holds %d objects after both were deleted; want 0", n)
		}
	})
}

// chunked hides a reader's length so the request has no Content-Length and the
// limit can only be found while streaming.
type chunked struct{ io.Reader }

func TestTooLargeUploadLeavesNothing(t *testing.T) {
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		big := bytes.Repeat([]byte{'x'}, 1<<20+1)
		for name, body := range map[string]func() io.Reader{
			"with length": func() io.Reader { return bytes.NewReader(big) },
			"chunked":     func() io.Reader { return chunked{bytes.NewReader(big)} },
		} {
			r := do(t, alice, "POST", "/_matrix/media/v3/upload", body(), "Content-Type", "application/octet-stream")
			if r.status != 413 || r.errcode() != "M_TOO_LARGE" {
				t.Errorf("%s: upload of 1 MiB + 1 = %d %s; want 413 M_TOO_LARGE", name, r.status, r.body)
			}
		}
		if n := s.objects(t); n != 0 {
			t.Errorf("backend holds %d objects after refused uploads; want 0", n)
		}
		if n := countFiles(t, s.tmpDir); n != 0 {
			t.Errorf("%d temporary files left behind", n)
		}
		var count int
		s.srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM media`).Scan(&count)
		if count != 0 {
			t.Errorf("%d media rows after refused uploads; want 0", count)
		}
		// Exactly the limit is fine.
		upload(t, alice, "application/octet-stream", "", big[:1<<20])
	}, func(c *config.Config) { c.Media.MaxUploadBytes = 1 << 20 })
}

func TestAsynchronousUpload(t *testing.T) {
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		bob := s.srv.Register(t, "bob", "pw")
		var created struct {
			ContentURI string `json:"content_uri"`
			Expires    int64  `json:"unused_expires_at"`
		}
		alice.MustDo("POST", "/_matrix/media/v1/create", map[string]any{}, &created)
		if created.Expires <= time.Now().UnixMilli() {
			t.Errorf("unused_expires_at = %d; want in the future", created.Expires)
		}
		mediaPath := strings.TrimPrefix(created.ContentURI, "mxc://")
		dl := "/_matrix/client/v1/media/download/" + mediaPath
		if r := do(t, bob, "GET", dl, nil); r.status != 504 || r.errcode() != "M_NOT_YET_UPLOADED" {
			t.Errorf("download before upload = %d %s; want 504 M_NOT_YET_UPLOADED", r.status, r.body)
		}
		put := "/_matrix/media/v3/upload/" + mediaPath + "?filename=voice.ogg"
		if r := do(t, bob, "PUT", put, strings.NewReader("not yours"), "Content-Type", "audio/ogg"); r.status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Errorf("upload into another's ID = %d %s; want 403 M_FORBIDDEN", r.status, r.body)
		}
		if r := do(t, alice, "PUT", put, strings.NewReader("OggS voice"), "Content-Type", "audio/ogg"); r.status != 200 {
			t.Fatalf("upload = %d %s", r.status, r.body)
		}
		if r := do(t, alice, "PUT", put, strings.NewReader("again"), "Content-Type", "audio/ogg"); r.status != 409 || r.errcode() != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Errorf("second upload = %d %s; want 409 M_CANNOT_OVERWRITE_MEDIA", r.status, r.body)
		}
		r := do(t, bob, "GET", dl, nil)
		if r.status != 200 || string(r.body) != "OggS voice" || r.header.Get("Content-Disposition") != "inline; filename=voice.ogg" {
			t.Errorf("download = %d %q %q", r.status, r.body, r.header.Get("Content-Disposition"))
		}
		if r := do(t, alice, "PUT", "/_matrix/media/v3/upload/localhost/nosuchid", strings.NewReader("x")); r.status != 404 {
			t.Errorf("upload into unknown ID = %d; want 404", r.status)
		}
	})
}

func TestLegacyEndpointsServeMediaBeforeCutoff(t *testing.T) {
	cutoff := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		img := encodePNG(t, 64, 48)
		_, id := upload(t, alice, "image/png", "cat.png", img)
		anon := s.srv.Client(t)
		for _, v := range []string{"v3", "r0"} {
			r := do(t, anon, "GET", "/_matrix/media/"+v+"/download/localhost/"+id+"/cat.png", nil)
			if r.status != 200 || !bytes.Equal(r.body, img) {
				t.Errorf("legacy %s download = %d", v, r.status)
			}
		}
		r := do(t, anon, "GET", "/_matrix/media/v3/thumbnail/localhost/"+id+"?width=32&height=32&method=crop", nil)
		if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
			t.Errorf("legacy thumbnail = %d %s", r.status, r.header.Get("Content-Type"))
		}
	}, func(c *config.Config) { c.Media.LegacyCutoff = cutoff })
}

func encodePNG(t testing.TB, w, h int) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, pattern(w, h)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func pattern(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	return img
}

// hugePNG is a valid PNG header declaring w × h pixels followed by one tiny
// compressed block: a decompression bomb's shape without its size.
func hugePNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

// webpLossless is a 1 × 1 lossless WebP (the one browsers' feature tests use).
const webpLossless = "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="

func TestThumbnails(t *testing.T) {
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		bob := s.srv.Register(t, "bob", "pw")

		var jpg, gifData bytes.Buffer
		jpeg.Encode(&jpg, pattern(800, 200), nil)
		pal := image.NewPaletted(image.Rect(0, 0, 200, 200), color.Palette{color.Black, color.White})
		gif.EncodeAll(&gifData, &gif.GIF{Image: []*image.Paletted{pal, pal}, Delay: []int{10, 10}})
		webp, _ := base64.StdEncoding.DecodeString(webpLossless)

		for _, tc := range []struct {
			name, contentType string
			data              []byte
			query             string
			wantType          string
			wantW, wantH      int
		}{
			{"png crop", "image/png", encodePNG(t, 400, 300), "width=96&height=96&method=crop", "image/png", 96, 96},
			{"png scale", "image/png", encodePNG(t, 400, 300), "width=320&height=240&method=scale", "image/png", 320, 240},
			{"jpeg scale keeps aspect", "image/jpeg", jpg.Bytes(), "width=320&height=240&method=scale", "image/jpeg", 320, 80},
			{"jpeg crop", "image/jpeg", jpg.Bytes(), "width=32&height=32&method=crop", "image/jpeg", 32, 32},
			{"gif first frame", "image/gif", gifData.Bytes(), "width=96&height=96&method=crop", "image/png", 96, 96},
			{"size snaps up", "image/png", encodePNG(t, 400, 300), "width=50&height=50&method=crop", "image/png", 96, 96},
			{"never scaled up", "image/png", encodePNG(t, 40, 30), "width=640&height=480&method=scale", "image/png", 40, 30},
			{"webp", "image/webp", webp, "width=32&height=32&method=scale", "image/png", 1, 1},
		} {
			_, id := upload(t, alice, tc.contentType, "", tc.data)
			path := "/_matrix/client/v1/media/thumbnail/localhost/" + id + "?" + tc.query
			r := do(t, bob, "GET", path, nil)
			if r.status != 200 || r.header.Get("Content-Type") != tc.wantType {
				t.Errorf("%s: thumbnail = %d %s %s; want 200 %s", tc.name, r.status, r.header.Get("Content-Type"), r.body, tc.wantType)
				continue
			}
			cfg, _, err := image.DecodeConfig(bytes.NewReader(r.body))
			if err != nil || cfg.Width != tc.wantW || cfg.Height != tc.wantH {
				t.Errorf("%s: thumbnail is %d × %d (%v); want %d × %d", tc.name, cfg.Width, cfg.Height, err, tc.wantW, tc.wantH)
			}
			// The second request is served from the cache: same bytes.
			if again := do(t, bob, "GET", path, nil); !bytes.Equal(again.body, r.body) {
				t.Errorf("%s: cached thumbnail differs", tc.name)
			}
		}
		// animated=true: an animated GIF keeps its frames; a PNG stays still.
		_, gifID := upload(t, alice, "image/gif", "", gifData.Bytes())
		r := do(t, bob, "GET", "/_matrix/client/v1/media/thumbnail/localhost/"+gifID+"?width=96&height=96&method=crop&animated=true", nil)
		if g, err := gif.DecodeAll(bytes.NewReader(r.body)); r.header.Get("Content-Type") != "image/gif" || err != nil || len(g.Image) != 2 {
			t.Errorf("animated thumbnail: %d %s (%v); want a 2-frame GIF", r.status, r.header.Get("Content-Type"), err)
		}
		_, pngID := upload(t, alice, "image/png", "", encodePNG(t, 100, 100))
		if r := do(t, bob, "GET", "/_matrix/client/v1/media/thumbnail/localhost/"+pngID+"?width=32&height=32&animated=true", nil); r.header.Get("Content-Type") != "image/png" {
			t.Errorf("animated=true on a PNG: %s; want image/png", r.header.Get("Content-Type"))
		}
		var cached int
		s.srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM media_thumbnails`).Scan(&cached)
		if cached != 10 {
			t.Errorf("%d thumbnails cached; want 10", cached)
		}

		// Hostile and unsuitable input is refused cleanly.
		png := encodePNG(t, 400, 300)
		for _, tc := range []struct {
			name, contentType string
			data              []byte
			query             string
			wantStatus        int
			wantCode          string
		}{
			{"truncated png", "image/png", png[:len(png)/2], "width=96&height=96", 400, "M_UNKNOWN"},
			{"50000 × 50000 declared", "image/png", hugePNG(50000, 50000), "width=96&height=96", 400, "M_TOO_LARGE"},
			{"not an image", "text/plain", []byte("just text"), "width=96&height=96", 400, "M_UNKNOWN"},
			{"image type, text inside", "image/jpeg", []byte("not a jpeg at all"), "width=96&height=96", 400, "M_UNKNOWN"},
			{"no size", "image/png", png, "", 400, "M_INVALID_PARAM"},
			{"bad method", "image/png", png, "width=96&height=96&method=stretch", 400, "M_INVALID_PARAM"},
		} {
			_, id := upload(t, alice, tc.contentType, "", tc.data)
			r := do(t, bob, "GET", "/_matrix/client/v1/media/thumbnail/localhost/"+id+"?"+tc.query, nil)
			if r.status != tc.wantStatus || r.errcode() != tc.wantCode {
				t.Errorf("%s: thumbnail = %d %s; want %d %s", tc.name, r.status, r.body, tc.wantStatus, tc.wantCode)
			}
		}
	})
}

// previewSite serves pages and an image for URL previews, on loopback.
func previewSite(t *testing.T) (site *httptest.Server, img []byte) {
	img = encodePNG(t, 64, 64)
	site = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<html><head><title>Fallback</title>
				<meta property="og:title" content="Hongyan">
				<meta property="og:description" content="A homeserver">
				<meta property="og:image" content="/logo.png">
				<meta property="og:image:width" content="64">
				</head><body>hi</body></html>`)
		case "/logo.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(img)
		case "/plain":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `<title> Just a title </title><meta name="description" content="described">`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(site.Close)
	return site, img
}

const previewPath = "/_matrix/client/v1/media/preview_url?url="

// By default loopback, private and link-local addresses are refused (SSRF).
func TestURLPreviewRefusesInternalAddresses(t *testing.T) {
	site, _ := previewSite(t)
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		for _, target := range []string{site.URL + "/page", "http://127.0.0.1/", "http://[::1]:1/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data"} {
			r := do(t, alice, "GET", previewPath+url.QueryEscape(target), nil)
			if r.status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Errorf("preview of %s = %d %s; want 403 M_FORBIDDEN", target, r.status, r.body)
			}
		}
		for _, bad := range []string{"", "ftp://example.org/", "not a url"} {
			if r := do(t, alice, "GET", previewPath+url.QueryEscape(bad), nil); r.status != 400 {
				t.Errorf("preview of %q = %d; want 400", bad, r.status)
			}
		}
	})
}

// With loopback allow-listed, the page's Open Graph data and image come through.
func TestURLPreviewOpenGraph(t *testing.T) {
	site, img := previewSite(t)
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		r := do(t, alice, "GET", previewPath+url.QueryEscape(site.URL+"/page"), nil)
		if r.status != 200 {
			t.Fatalf("preview = %d %s", r.status, r.body)
		}
		og := r.json(t)
		if og["og:title"] != "Hongyan" || og["og:description"] != "A homeserver" || og["og:image:width"] != float64(64) ||
			og["matrix:image:size"] != float64(len(img)) {
			t.Errorf("preview = %v", og)
		}
		mxc, _ := og["og:image"].(string)
		dl := do(t, alice, "GET", "/_matrix/client/v1/media/download/"+strings.TrimPrefix(mxc, "mxc://"), nil)
		if dl.status != 200 || !bytes.Equal(dl.body, img) {
			t.Errorf("preview image %q = %d", mxc, dl.status)
		}
		r = do(t, alice, "GET", previewPath+url.QueryEscape(site.URL+"/plain"), nil)
		if og := r.json(t); og["og:title"] != "Just a title" || og["og:description"] != "described" {
			t.Errorf("fallback preview = %v", og)
		}
		if r := do(t, alice, "GET", previewPath+url.QueryEscape(site.URL+"/missing"), nil); r.status != 502 {
			t.Errorf("preview of a 404 page = %d; want 502", r.status)
		}
		// The pre-1.11 path older clients use gives the same preview.
		if r := do(t, alice, "GET", "/_matrix/media/v3/preview_url?url="+url.QueryEscape(site.URL+"/page"), nil); r.status != 200 || r.json(t)["og:title"] != "Hongyan" {
			t.Errorf("preview through /_matrix/media/v3 = %d %s; want the page's", r.status, r.body)
		}
		if r := do(t, s.srv.Client(t), "GET", "/_matrix/media/v3/preview_url?url="+url.QueryEscape(site.URL+"/page"), nil); r.status != 401 {
			t.Errorf("preview through /_matrix/media/v3 without a token = %d; want 401", r.status)
		}
	}, func(c *config.Config) { c.Media.PreviewAllow = "127.0.0.0/8" })
}

// makeAdmin registers an account and makes it a server admin.
func makeAdmin(t *testing.T, s *setup, localpart string) *testserver.Client {
	t.Helper()
	c := s.srv.Register(t, localpart, "pw")
	if _, err := s.srv.DB.Exec(context.Background(), `UPDATE accounts SET is_admin = TRUE WHERE localpart = $1`, localpart); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAdminQuarantineDeleteAndUsage(t *testing.T) {
	forEachSetup(t, func(t *testing.T, s *setup) {
		alice := s.srv.Register(t, "alice", "pw")
		admin := makeAdmin(t, s, "root")
		_, id1 := upload(t, alice, "text/plain", "", []byte("first"))
		_, id2 := upload(t, alice, "text/plain", "", []byte("second!"))
		_, id3 := upload(t, alice, "text/plain", "", []byte("third"))

		for _, p := range []struct{ method, path string }{
			{"POST", "/_synapse/admin/v1/media/quarantine/localhost/" + id1},
			{"DELETE", "/_synapse/admin/v1/media/localhost/" + id1},
			{"POST", "/_synapse/admin/v1/media/delete?before_ts=1"},
			{"GET", "/_synapse/admin/v1/users/" + alice.UserID + "/media"},
		} {
			if r := do(t, alice, p.method, p.path, nil); r.status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Errorf("%s %s as a user = %d; want 403", p.method, p.path, r.status)
			}
		}
		var usage map[string]any
		admin.MustDo("GET", "/_synapse/admin/v1/users/"+alice.UserID+"/media", nil, &usage)
		if usage["media_count"] != float64(3) || usage["media_length"] != float64(len("first")+len("second!")+len("third")) {
			t.Errorf("usage = %v", usage)
		}

		admin.MustDo("POST", "/_synapse/admin/v1/media/quarantine/localhost/"+id1, map[string]any{}, nil)
		if r := do(t, alice, "GET", "/_matrix/client/v1/media/download/localhost/"+id1, nil); r.status != 404 {
			t.Errorf("quarantined download = %d; want 404", r.status)
		}
		admin.MustDo("DELETE", "/_synapse/admin/v1/media/localhost/"+id2, nil, nil)
		if r := do(t, alice, "GET", "/_matrix/client/v1/media/download/localhost/"+id2, nil); r.status != 404 {
			t.Errorf("deleted download = %d; want 404", r.status)
		}
		if r := do(t, admin, "DELETE", "/_synapse/admin/v1/media/localhost/"+id2, nil); r.status != 404 {
			t.Errorf("second delete = %d; want 404", r.status)
		}
		if n := s.objects(t); n != 2 {
			t.Errorf("backend holds %d objects; want 2", n)
		}
		var out struct {
			Deleted []string `json:"deleted_media"`
			Total   int      `json:"total"`
		}
		admin.MustDo("POST", fmt.Sprintf("/_synapse/admin/v1/media/delete?before_ts=%d", time.Now().Add(time.Minute).UnixMilli()), map[string]any{}, &out)
		if out.Total != 2 || len(out.Deleted) != 2 {
			t.Errorf("delete by age = %+v; want media %s and %s", out, id1, id3)
		}
		if n := s.objects(t); n != 0 {
			t.Errorf("backend holds %d objects after delete by age; want 0", n)
		}
		if r := do(t, admin, "POST", "/_synapse/admin/v1/media/delete", nil); r.status != 400 {
			t.Errorf("delete without before_ts = %d; want 400", r.status)
		}
	})
}

// pattern200 yields left bytes of a repeating pattern without holding them.
type pattern200 struct{ left int64 }

func (p *pattern200) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.left)
	for i := range b[:n] {
		b[i] = byte(i)
	}
	p.left -= n
	return int(n), nil
}

// rssBytes is this process's resident set size.
func rssBytes(t *testing.T) int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, rss int64
	fmt.Sscan(string(data), &size, &rss)
	return rss * int64(os.Getpagesize())
}

// TestLargeUploadStreams streams 200 MiB in and out and checks the process (server
// and client both live in it) never grows its resident memory by 50 MiB.
func TestLargeUploadStreams(t *testing.T) {
	const size = 200 << 20
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) {
			s := start(t, storagetest.Engines()[0], b, func(c *config.Config) { c.Media.MaxUploadBytes = 300 << 20 })
			alice := s.srv.Register(t, "alice", "pw")
			base := rssBytes(t)
			peak := base
			done := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					select {
					case <-done:
						return
					case <-time.After(5 * time.Millisecond):
						peak = max(peak, rssBytes(t))
					}
				}
			}()
			r := do(t, alice, "POST", "/_matrix/media/v3/upload", chunked{&pattern200{left: size}}, "Content-Type", "video/mp4")
			if r.status != 200 {
				t.Fatalf("upload = %d %s", r.status, r.body)
			}
			var out struct {
				ContentURI string `json:"content_uri"`
			}
			json.Unmarshal(r.body, &out)
			req, _ := http.NewRequest("GET", s.srv.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(out.ContentURI, "mxc://"), nil)
			req.Header.Set("Authorization", "Bearer "+alice.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			close(done)
			<-sampled
			if err != nil || n != size {
				t.Fatalf("download read %d bytes (%v); want %d", n, err, size)
			}
			growth := float64(peak-base) / (1 << 20)
			t.Logf("%s: RSS %.1f MiB before, peak growth %.1f MiB while streaming 200 MiB in and out", b, float64(base)/(1<<20), growth)
			if growth >= 50 {
				t.Errorf("RSS grew by %.1f MiB while streaming 200 MiB; want < 50", growth)
			}
		})
	}
}
