// Package bus is the event bus: NATS JetStream, either a server embedded in the
// process (the default, storing in the data directory) or an external cluster.
//
// The bus carries wake-ups and durable work, not the truth: consumers read from SQL
// (DESIGN.md, "How an event flows").
package bus

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hongyan/hongyan/homeserver/config"
)

// Config selects the bus.
type Config struct {
	// URL of an external NATS server or cluster; empty embeds one.
	URL string
	// StoreDir holds the embedded server's JetStream files.
	StoreDir string
}

// Bus is a connection to NATS JetStream, and the embedded server when there is one.
type Bus struct {
	Conn      *nats.Conn
	JetStream jetstream.JetStream
	embedded  *server.Server // nil with an external server
}

// Open starts the embedded server (if cfg.URL is empty) and connects.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	b := &Bus{}
	var opts []nats.Option
	url := cfg.URL
	if url == "" {
		ns, err := server.NewServer(&server.Options{
			ServerName: "hongyan-embedded",
			DontListen: true, // in-process connections only: nothing to expose or secure
			JetStream:  true,
			StoreDir:   filepath.Join(cfg.StoreDir),
			NoSigs:     true,
			NoLog:      true,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded nats: not ready after 10s")
		}
		b.embedded = ns
		opts = append(opts, nats.InProcessServer(ns))
		url = nats.DefaultURL
	}
	opts = append(opts, nats.Name("hongyan"), nats.MaxReconnects(-1))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("connect nats %s: %w", config.RedactValue("userinfo", url), err)
	}
	b.Conn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.JetStream = js
	if _, err := js.AccountInfo(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream not available at %s: %w", config.RedactValue("userinfo", url), err)
	}
	return b, nil
}

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.Conn != nil {
		b.Conn.Drain()
		b.Conn.Close()
	}
	if b.embedded != nil {
		b.embedded.Shutdown()
		b.embedded.WaitForShutdown()
	}
}
