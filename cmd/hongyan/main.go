// Command hongyan is the Hongyan homeserver.
//
//	hongyan [run] [flags]            serve (the default)
//	hongyan migrate [flags]          apply database migrations and exit
//	hongyan keys generate [-out F]   write a new signing key
//	hongyan admin create-user ...    create an account directly in the database
//	hongyan config [flags]           print the effective configuration
//
// Settings come from defaults, then --config FILE (YAML), then HONGYAN_* variables,
// then flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hongyan/hongyan/homeserver"
	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/users"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "hongyan:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runServer(args)
	case "migrate":
		return migrate(args)
	case "keys":
		if len(args) == 0 || args[0] != "generate" {
			return errors.New("usage: hongyan keys generate [-out FILE]")
		}
		return generateKey(args[1:])
	case "admin":
		if len(args) == 0 || args[0] != "create-user" {
			return errors.New("usage: hongyan admin create-user -user NAME -password PW [-admin]")
		}
		return createUser(args[1:])
	case "config":
		return printConfig(args)
	case "help", "-h", "--help":
		fmt.Println("usage: hongyan [run|migrate|keys generate|admin create-user|config] [flags]")
		return nil
	}
	return fmt.Errorf("unknown command %q (want run, migrate, keys, admin or config)", cmd)
}

// configFlags registers the flags every subcommand shares and returns a loader that
// applies them over the file and environment.
func configFlags(fs *flag.FlagSet) func() (config.Config, error) {
	path := fs.String("config", "", "YAML configuration file")
	overrides := map[string]*string{}
	for flagName, setting := range map[string]string{
		"data-dir":     "data_dir",
		"listen":       "listen",
		"server-name":  "server_name",
		"database-url": "database.url",
		"nats-url":     "nats.url",
		"rate-limit":   "rate_limit.enabled",
		"log-level":    "log.level",
		// The native protocol's TCP listener ("off" to disable) and TLS listener.
		"native-listen":     "native.listen",
		"native-tls-listen": "native.tls_listen",
		// Federation: its TLS listener (off unless set), its certificate (self-signed
		// into the data dir if not given), and, on test networks, skipping
		// verification of other servers' certificates and reaching loopback and
		// private addresses.
		"federation-listen":   "federation.listen",
		"tls-cert":            "federation.tls_cert",
		"tls-key":             "federation.tls_key",
		"federation-insecure": "federation.insecure_skip_verify",
		// /metrics on a listener of its own, off the client API's.
		"metrics-listen": "metrics.listen",
	} {
		overrides[setting] = new(string)
		set := func(v string) error { *overrides[setting] = v; return nil }
		if setting == "rate_limit.enabled" || setting == "federation.insecure_skip_verify" {
			// A boolean flag: --rate-limit=false, or --rate-limit alone for true.
			fs.BoolFunc(flagName, "sets "+setting, set)
			continue
		}
		fs.Func(flagName, "sets "+setting, set)
	}
	return func() (config.Config, error) {
		cfg, err := config.Load(*path, os.Environ())
		if err != nil {
			return cfg, err
		}
		for setting, v := range overrides {
			if *v != "" {
				if err := config.Set(&cfg, setting, *v); err != nil {
					return cfg, fmt.Errorf("flag for %s: %w", setting, err)
				}
			}
		}
		return cfg, cfg.Validate()
	}
}

// parseConfig parses a subcommand's flags (the shared ones plus any extra registers)
// and returns the effective configuration with logging set up.
func parseConfig(name string, args []string, extra func(fs *flag.FlagSet)) (config.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	load := configFlags(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	cfg, err := load()
	if err != nil {
		return cfg, err
	}
	setupLogging(cfg)
	return cfg, nil
}

// openDB opens and migrates the configured database without starting a server.
func openDB(ctx context.Context, cfg config.Config) (*storage.DB, int, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, 0, err
	}
	db, err := storage.Open(ctx, cfg.Database.URL, cfg.DataDir)
	if err != nil {
		return nil, 0, err
	}
	n, err := db.Migrate(ctx)
	if err != nil {
		db.Close()
		return nil, 0, err
	}
	return db, n, nil
}

func setupLogging(cfg config.Config) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	slog.SetDefault(slog.New(h))
}

func runServer(args []string) error {
	cfg, err := parseConfig("run", args, nil)
	if err != nil {
		return err
	}
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	s, err := homeserver.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	dbKind := "sqlite"
	if cfg.Database.URL != "" {
		dbKind = string(s.DB.Dialect)
	}
	native, err := s.ListenNative(ctx)
	if err != nil {
		return err
	}
	fed, err := s.ListenFederation(ctx)
	if err != nil {
		return err
	}
	metrics, err := s.ListenMetrics(ctx)
	if err != nil {
		return err
	}
	turnAddr, err := s.ListenTURN(ctx)
	if err != nil {
		return err
	}
	if metrics == "" {
		metrics = "http://" + ln.Addr().String() + "/metrics"
	}
	slog.Info("hongyan is serving", "server_name", cfg.ServerName, "client_api", "http://"+ln.Addr().String(),
		"native", native, "federation", fed, "metrics", metrics, "turn", turnAddr, "database", dbKind, "registration_open", cfg.RegistrationOpen(), "startup", time.Since(start).Round(time.Millisecond))
	err = s.Serve(ctx, ln)
	slog.Info("hongyan stopped")
	return err
}

func migrate(args []string) error {
	cfg, err := parseConfig("migrate", args, nil)
	if err != nil {
		return err
	}
	db, n, err := openDB(context.Background(), cfg)
	if err != nil {
		return err
	}
	db.Close()
	fmt.Printf("applied %d migration(s)\n", n)
	return nil
}

func generateKey(args []string) error {
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	out := fs.String("out", "signing.key", "file to write the new key to (never overwritten)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key, err := serverkey.Generate()
	if err != nil {
		return err
	}
	if err := serverkey.WriteNew(*out, key); err != nil {
		return err
	}
	fmt.Printf("wrote %s to %s\n", key.ID, *out)
	return nil
}

func createUser(args []string) error {
	var user, password *string
	var admin *bool
	cfg, err := parseConfig("admin create-user", args, func(fs *flag.FlagSet) {
		user = fs.String("user", "", "localpart of the new user")
		password = fs.String("password", "", "password of the new user")
		admin = fs.Bool("admin", false, "make the user a server admin")
	})
	if err != nil {
		return err
	}
	if err := users.CheckNewPassword(*password); err != nil {
		return err
	}
	ctx := context.Background()
	db, _, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	svc := users.New(db, users.Config{ServerName: cfg.ServerName})
	local := strings.ToLower(strings.TrimPrefix(*user, "@"))
	if l, ok := svc.LocalpartOf(*user); ok {
		local = l
	}
	if err := svc.ValidateLocalpart(local); err != nil {
		return err
	}
	sess, err := svc.Register(ctx, users.NewAccount{Localpart: local, Password: *password, Admin: *admin}, users.LoginOptions{}, true)
	if err != nil {
		return err
	}
	fmt.Printf("created %s (admin: %v)\n", sess.UserID, *admin)
	return nil
}

// printConfig prints the effective configuration with every secret redacted
// (config.Config.YAML): its output ends up in bug reports and chat.
func printConfig(args []string) error {
	cfg, err := parseConfig("config", args, nil)
	if err != nil {
		return err
	}
	out, err := cfg.YAML()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
