package mediahttp_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// BenchmarkTransfer measures upload and download throughput of one 64 MiB file over
// loopback HTTP on each backend (SQLite for the metadata):
//
//	HONGYAN_TEST_MINIO=... go test -run XXX -bench Transfer -benchtime 5x ./media/mediahttp/
func BenchmarkTransfer(b *testing.B) {
	const size = 64 << 20
	for _, backend := range backends() {
		s := start(b, storage.SQLite, backend, func(c *config.Config) { c.Media.MaxUploadBytes = 1 << 30 })
		alice := s.srv.Register(b, "alice", "pw")
		var mxc string
		b.Run(backend+"/upload", func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				// A different first byte each time, so deduplication does not skip the write.
				r := do(b, alice, "POST", "/_matrix/media/v3/upload", io.MultiReader(strings.NewReader(string(rune('a'+i%26))+randHex(8)),
					&pattern200{left: size - 17}), "Content-Type", "video/mp4")
				if r.status != 200 {
					b.Fatalf("upload = %d %s", r.status, r.body)
				}
				var out struct {
					ContentURI string `json:"content_uri"`
				}
				json.Unmarshal(r.body, &out)
				mxc = strings.TrimPrefix(out.ContentURI, "mxc://")
			}
		})
		b.Run(backend+"/download", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				req, _ := http.NewRequest("GET", s.srv.URL+"/_matrix/client/v1/media/download/"+mxc, nil)
				req.Header.Set("Authorization", "Bearer "+alice.Token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != size {
					b.Fatalf("downloaded %d bytes; want %d", n, size)
				}
			}
		})
	}
}
