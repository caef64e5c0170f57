package clientsync

import (
	"fmt"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// TestSlidingPositions: a sliding sync pos resumes only the connection that issued
// it (same user, device and conn_id, same process), and only while it is one of the
// connection's last keptPositions; everything else is M_UNKNOWN_POS.
func TestSlidingPositions(t *testing.T) {
	c := newSlidingConns()
	req := func(user, device, connID, pos string) SlidingRequest {
		return SlidingRequest{UserID: user, DeviceID: device, Pos: pos, Body: SlidingBody{ConnID: connID}}
	}
	conn, prev, err := c.open(req("@a:x", "D", "main", ""))
	if err != nil || prev != nil {
		t.Fatalf("open new connection = %v, %v; want a fresh connection", prev, err)
	}
	posOf := func(n int64) string { return fmt.Sprintf("%s_%d", c.nonce, n) }
	var issued []string
	for i := range 5 {
		n := conn.commit(&connPos{token: Token{Events: int64(10 + i)}})
		issued = append(issued, posOf(n))
	}

	for _, tc := range []struct {
		name       string
		req        SlidingRequest
		wantEvents int64 // 0: want M_UNKNOWN_POS
	}{
		{"latest", req("@a:x", "D", "main", issued[4]), 14},
		{"one back, for a retry", req("@a:x", "D", "main", issued[3]), 13},
		{"oldest kept", req("@a:x", "D", "main", issued[2]), 12},
		{"too old", req("@a:x", "D", "main", issued[1]), 0},
		{"first", req("@a:x", "D", "main", issued[0]), 0},
		{"never issued", req("@a:x", "D", "main", posOf(6)), 0},
		{"another process", req("@a:x", "D", "main", "0123456789ab_5"), 0},
		{"another user", req("@b:x", "D", "main", issued[4]), 0},
		{"another device", req("@a:x", "E", "main", issued[4]), 0},
		{"another conn_id", req("@a:x", "D", "other", issued[4]), 0},
		{"no number", req("@a:x", "D", "main", c.nonce+"_"), 0},
		{"not a number", req("@a:x", "D", "main", c.nonce+"_x"), 0},
		{"no separator", req("@a:x", "D", "main", c.nonce), 0},
		{"garbage", req("@a:x", "D", "main", "s12_3_4"), 0},
	} {
		_, got, err := c.open(tc.req)
		if tc.wantEvents == 0 {
			if !mxerror.Is(err, mxerror.UnknownPos) {
				t.Errorf("%s: open(pos %q) = %+v, %v; want M_UNKNOWN_POS", tc.name, tc.req.Pos, got, err)
			}
			continue
		}
		if err != nil || got == nil || got.token.Events != tc.wantEvents {
			t.Errorf("%s: open(pos %q) = %+v, %v; want the position at events %d", tc.name, tc.req.Pos, got, err, tc.wantEvents)
		}
	}

	// Starting the connection again (no pos) forgets its earlier positions.
	if _, _, err := c.open(req("@a:x", "D", "main", "")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.open(req("@a:x", "D", "main", issued[4])); !mxerror.Is(err, mxerror.UnknownPos) {
		t.Errorf("open(pos of the replaced connection) = %+v, %v; want M_UNKNOWN_POS", got, err)
	}
}
