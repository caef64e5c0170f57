package bus

import (
	"context"
	"testing"
	"time"

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
