package loadgen_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/hongyan/hongyan/bench/loadgen"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestScenarios runs every scenario at a small size against a real server, so the
// harness keeps working as the server changes; the numbers themselves are recorded
// in bench/RESULTS.md, not checked here.
func TestScenarios(t *testing.T) {
	srv := testserver.Start(t, storage.SQLite)
	cfg := loadgen.Config{Base: srv.URL, Prefix: "t", HTTP: loadgen.NewHTTP(64), Proc: &loadgen.Process{PID: os.Getpid()}}
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		run   func() (loadgen.Result, error)
		check string // a metric that must be positive
	}{
		{"idle", func() (loadgen.Result, error) { return loadgen.Idle(cfg) }, "rss_mib"},
		{"register", func() (loadgen.Result, error) { return loadgen.RunRegister(ctx, cfg, 10, 4) }, "users_per_s"},
		{"send", func() (loadgen.Result, error) { return loadgen.RunSend(ctx, cfg, 40, 4, 6) }, "msgs_per_s"},
		{"fanout", func() (loadgen.Result, error) { return loadgen.RunFanout(ctx, cfg, 5, 20, time.Second) }, "p99_ms"},
		{"rooms", func() (loadgen.Result, error) { return loadgen.RunRooms(ctx, cfg, 5, 2) }, "joins_per_s"},
		{"initial_sync", func() (loadgen.Result, error) { return loadgen.RunInitialSync(ctx, cfg, 5, 3) }, "median_ms"},
		{"idle_sync", func() (loadgen.Result, error) { return loadgen.RunIdle(ctx, cfg, 10) }, "rss_after_mib"},
		{"native_idle", func() (loadgen.Result, error) { return loadgen.RunNativeIdle(ctx, cfg, srv.NativeAddr, 20, 4) }, "connect_auth_per_s"},
		{"native_fanout", func() (loadgen.Result, error) {
			return loadgen.RunNativeFanout(ctx, cfg, srv.NativeAddr, 5, 20, time.Second)
		}, "delivered_share"},
		{"native_social", func() (loadgen.Result, error) { return loadgen.RunNativeSocial(ctx, cfg, srv.NativeAddr, 3) }, "request_push_p50_ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.run()
			if err != nil {
				t.Fatal(err)
			}
			if v, _ := r[tc.check].(float64); v <= 0 {
				t.Errorf("%s = %v; want a positive measurement: %v", tc.check, r[tc.check], r)
			}
			if tc.name == "fanout" && r["delivered_share"] != 1.0 {
				t.Errorf("delivered_share = %v; want every message delivered to every receiver", r["delivered_share"])
			}
		})
	}
}
