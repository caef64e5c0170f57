// Command hongyan-webhook runs the webhook bridge (bridges/webhook) as a process
// of its own, an application service of any homeserver.
//
//	hongyan-webhook -config webhook.yaml -generate-registration webhook-registration.yaml
//	hongyan-webhook -config webhook.yaml
//
// The first writes a registration file with fresh tokens (give it to the
// homeserver in app_service_config_files, and name it in the bridge's config
// under registration); the second runs the bridge.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"maunium.net/go/mautrix/appservice"

	"github.com/hongyan/hongyan/bridges/webhook"
)

func main() {
	configPath := flag.String("config", "webhook.yaml", "the bridge's configuration file")
	generate := flag.String("generate-registration", "", "write a new registration file here and exit")
	flag.Parse()
	if err := run(*configPath, *generate); err != nil {
		fmt.Fprintln(os.Stderr, "hongyan-webhook:", err)
		os.Exit(1)
	}
}

func run(configPath, generate string) error {
	cfg, err := webhook.LoadConfig(configPath)
	if err != nil {
		return err
	}
	if generate != "" {
		return webhook.NewRegistration(cfg).Save(generate)
	}
	reg, err := appservice.LoadRegistration(cfg.Registration)
	if err != nil {
		return fmt.Errorf("registration %s: %w", cfg.Registration, err)
	}
	b, err := webhook.New(cfg, reg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.Info("webhook bridge listening", "addr", ln.Addr().String(), "hooks", len(cfg.Hooks))
	return b.Serve(ctx, ln)
}
