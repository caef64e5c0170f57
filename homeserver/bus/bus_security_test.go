package bus

import (
	"context"
	"net"
	"strings"
	"testing"
)

// TestOpenErrorHidesCredentials: a NATS URL carries a token or a password, and
// Open's error ends up in the log and on the terminal.
func TestOpenErrorHidesCredentials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: the connection is refused
	for _, url := range []string{"nats://tok-8d1e@" + addr, "nats://hongyan:pw-8d1e@" + addr} {
		_, err := Open(context.Background(), Config{URL: url})
		if err == nil {
			t.Fatalf("Open(%s) = nil error; want a refused connection", url)
		}
		if strings.Contains(err.Error(), "8d1e") {
			t.Errorf("Open(%s) = %v; want the credentials hidden", url, err)
		}
	}
}
