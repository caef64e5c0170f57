package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestFederationMediaThumbnail: another server asks for a thumbnail of local media
// (GET /_matrix/federation/v1/media/thumbnail, spec v1.11) and gets the multipart
// answer with a scaled image; an unsigned request and bad sizes are refused.
func TestFederationMediaThumbnail(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		a := testserver.Start(t, d, testserver.Federated)
		b := testserver.Start(t, d, testserver.Federated)
		alice := a.Register(t, "alice", "pw")
		img := image.NewRGBA(image.Rect(0, 0, 640, 480))
		for x := 0; x < 640; x++ {
			for y := 0; y < 480; y++ {
				img.Set(x, y, color.RGBA{uint8(x), uint8(y), 90, 255})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", a.URL+"/_matrix/media/v3/upload?filename=big.png", &buf)
		req.Header.Set("Authorization", "Bearer "+alice.Token)
		req.Header.Set("Content-Type", "image/png")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var up struct {
			ContentURI string `json:"content_uri"`
		}
		json.NewDecoder(resp.Body).Decode(&up)
		resp.Body.Close()
		_, mediaID, _ := strings.Cut(strings.TrimPrefix(up.ContentURI, "mxc://"), "/")
		if mediaID == "" {
			t.Fatalf("upload answered %d, content_uri %q", resp.StatusCode, up.ContentURI)
		}

		path := "/_matrix/federation/v1/media/thumbnail/" + mediaID + "?width=64&height=64&method=scale"
		resp = fedGetRaw(t, b, a, path)
		defer resp.Body.Close()
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 200 || err != nil || mt != "multipart/mixed" {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("thumbnail = %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		mr := multipart.NewReader(resp.Body, params["boundary"])
		if meta, err := mr.NextPart(); err != nil || meta.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("first part = %v, %v; want the JSON metadata", meta, err)
		}
		part, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		thumb, _, err := image.Decode(part)
		if err != nil {
			t.Fatalf("second part is not an image: %v (%s)", err, part.Header.Get("Content-Type"))
		}
		// The spec asks for at least the requested size; servers pick from a few
		// standard sizes. Smaller than the original is what makes it a thumbnail.
		if bnd := thumb.Bounds(); bnd.Dx() >= 640 || bnd.Dy() >= 480 || (bnd.Dx() < 64 && bnd.Dy() < 64) {
			t.Errorf("thumbnail is %v; want a scaled-down image at least 64 on a side", bnd)
		}

		for _, c := range []struct {
			name   string
			resp   func() *http.Response
			status int
		}{
			{"unsigned", func() *http.Response {
				r, err := fedClient().DoHTTPRequest(context.Background(), mustRequest(t, a, path))
				if err != nil {
					t.Fatal(err)
				}
				return r
			}, 401},
			{"no size", func() *http.Response {
				return fedGetRaw(t, b, a, "/_matrix/federation/v1/media/thumbnail/"+mediaID)
			}, 400},
			{"unknown media", func() *http.Response {
				return fedGetRaw(t, b, a, "/_matrix/federation/v1/media/thumbnail/nosuchmedia?width=64&height=64")
			}, 404},
		} {
			r := c.resp()
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != c.status {
				t.Errorf("%s: %d %s; want %d", c.name, r.StatusCode, body, c.status)
			}
		}
	})
}

// fedClient sends federation requests as they are given (signed or not),
// resolving matrix-federation:// URLs; test servers' certificates are self-signed.
func fedClient() *fclient.Client { return fclient.NewClient(fclient.WithSkipVerify(true)) }

// mustRequest is an unsigned federation GET to server to.
func mustRequest(t *testing.T, to *testserver.Server, path string) *http.Request {
	t.Helper()
	r, err := http.NewRequest("GET", "matrix-federation://"+to.Config.ServerName+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fedGetRaw makes a GET request signed as server from to server to and returns
// the raw response.
func fedGetRaw(t *testing.T, from, to *testserver.Server, path string) *http.Response {
	t.Helper()
	resp, err := fedClient().DoHTTPRequest(context.Background(), signedHTTPRequest(t, from, to, "GET", path, nil))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
