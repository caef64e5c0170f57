package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEmbeddedJetStreamPublishesDurably(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	b, err := Open(ctx, Config{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream.Publish(ctx, "t.x", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	b.Close()

	// A restart over the same store still has the message: JetStream persisted it.
	b, err = Open(ctx, Config{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.JetStream.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil || string(msg.Data) != "hello" {
		t.Fatalf("GetMsg(1) after restart = %v, %v; want hello", msg, err)
	}
}

// TestExternalServer connects to a NATS server over TCP by URL, the scale-out path,
// against a real nats-server listening on a loopback port.
func TestExternalServer(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{URL: ns.ClientURL()})
	if err != nil {
		t.Fatalf("Open(%s): %v", ns.ClientURL(), err)
	}
	defer b.Close()
	if b.embedded != nil {
		t.Fatal("Open with a URL started an embedded server")
	}
	got := make(chan string, 1)
	sub, err := b.Conn.Subscribe("hello", func(m *nats.Msg) { got <- string(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := b.Conn.Publish("hello", []byte("world")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "world" {
			t.Fatalf("received %q; want world", s)
		}
	case <-ctx.Done():
		t.Fatal("no message through the external server")
	}
}
