package mediahttp_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestRemoteMedia: bob on B downloads what alice uploaded on A. B fetches it over
// federation once and then serves it itself, even with A down.
// Both servers use the backend under test.
func TestRemoteMedia(t *testing.T) {
	for _, d := range storagetest.Engines() {
		for _, backend := range backends() {
			t.Run(string(d)+"/"+backend, func(t *testing.T) {
				t.Parallel()
				remoteMedia(t, start(t, d, backend, testserver.Federated).srv, start(t, d, backend, testserver.Federated).srv)
			})
		}
	}
}

func remoteMedia(t *testing.T, a, b *testserver.Server) {
	alice := a.Register(t, "alice", "pw")
	bob := b.Register(t, "bob", "pw")
	content := bytes.Repeat([]byte("hongyan federated media "), 40_000) // ~1 MiB
	req, _ := http.NewRequest("POST", a.URL+"/_matrix/media/v3/upload?filename=notes.txt", bytes.NewReader(content))
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	mxc := strings.TrimPrefix(up.ContentURI, "mxc://")
	if !strings.HasPrefix(mxc, a.Config.ServerName+"/") {
		t.Fatalf("content_uri = %q", up.ContentURI)
	}

	download := func() (int, string, string, []byte) {
		req, _ := http.NewRequest("GET", b.URL+"/_matrix/client/v1/media/download/"+mxc, nil)
		req.Header.Set("Authorization", "Bearer "+bob.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"), body
	}
	st, ct, disp, body := download()
	if st != 200 || !bytes.Equal(body, content) {
		t.Fatalf("remote download = %d, %d bytes; want 200 and the %d uploaded", st, len(body), len(content))
	}
	if !strings.HasPrefix(ct, "text/plain") || !strings.Contains(disp, "notes.txt") {
		t.Errorf("remote download headers: Content-Type %q, Content-Disposition %q", ct, disp)
	}
	a.Stop()
	if st, _, _, body := download(); st != 200 || !bytes.Equal(body, content) {
		t.Errorf("download with A down = %d, %d bytes; want B's copy", st, len(body))
	}
	var e struct {
		ErrCode string `json:"errcode"`
	}
	if st := bob.Do("GET", "/_matrix/client/v1/media/download/"+a.Config.ServerName+"/nosuchmedia", nil, &e); st < 400 || st >= 600 || st == 500 {
		t.Errorf("unknown remote media with its server down = %d %s", st, e.ErrCode)
	}
}
