package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestTURNServerRefusesOutsiders: TURN credentials are for users of this
// server only; no token or a forged one gets none.
func TestTURNServerRefusesOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		anon := srv.Client(t)
		wantErr(t, anon, "GET", "/_matrix/client/v3/voip/turnServer", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
		wantErr(t, anon.WithToken("syt_forged"), "GET", "/_matrix/client/v3/voip/turnServer", nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}
