package storage

import (
	"context"
	"net"
	"strings"
	"testing"
)

// TestOpenErrorHidesPassword: a database URL carries a password, and Open's error
// ends up in the log and on the terminal.
func TestOpenErrorHidesPassword(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: the connection is refused
	for _, dsn := range []string{
		"postgres://hongyan:pw-3b7a@" + addr + "/db?connect_timeout=5",
		"postgres://hongyan@" + addr + "/db?password=pw-3b7a&connect_timeout=5",
		"mysql://hongyan:pw-3b7a@" + addr + "/db",
	} {
		db, err := Open(context.Background(), dsn, t.TempDir())
		if err == nil {
			db.Close()
			t.Fatalf("Open(%s) = nil error; want a refused connection", dsn)
		}
		if strings.Contains(err.Error(), "3b7a") {
			t.Errorf("Open(%s) = %v; want the password hidden", dsn, err)
		}
	}
}
