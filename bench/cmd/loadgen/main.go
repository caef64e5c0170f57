// Command loadgen drives a homeserver with load scenarios over the client–server API
// (and, for Hongyan, its native protocol: scenarios native_idle, native_fanout and
// native_social)
// and prints one JSON line per scenario. It works against any homeserver with open
// registration (m.login.dummy) and rate limits off; given the server's pid it also
// reports the server's CPU time and memory.
//
//	go run ./bench/cmd/loadgen -hs http://127.0.0.1:8008 -pid $(pgrep hongyan) -label hongyan-sqlite
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/hongyan/hongyan/bench/loadgen"
)

func main() {
	hs := flag.String("hs", "http://127.0.0.1:8008", "the homeserver's client API URL")
	pid := flag.Int("pid", 0, "the server's process ID, to measure its CPU time and memory")
	label := flag.String("label", "", "a label added to every result line, e.g. hongyan-sqlite")
	scenarios := flag.String("scenarios", "idle,register,send,fanout,rooms,initial_sync,idle_sync", "comma-separated scenarios to run, in order")
	users := flag.Int("register-users", 200, "register: users to register")
	regConc := flag.Int("register-concurrency", 8, "register: concurrent clients")
	sendN := flag.Int("send-messages", 2000, "send: messages in total")
	senders := flag.Int("send-senders", 8, "send: concurrent senders")
	members := flag.Int("send-members", 50, "send: room members")
	receivers := flag.Int("fanout-receivers", 100, "fanout: long-polling receivers")
	rate := flag.Float64("fanout-rate", 20, "fanout: messages per second")
	fanDur := flag.Duration("fanout-duration", 15*time.Second, "fanout: how long to send")
	rooms := flag.Int("rooms", 100, "rooms: rooms to create")
	joiners := flag.Int("rooms-joiners", 5, "rooms: users joining each room")
	syncRooms := flag.Int("sync-rooms", 500, "initial_sync: rooms the user is in")
	history := flag.Int("sync-history", 10, "initial_sync: messages per room")
	idleClients := flag.Int("idle-clients", 500, "idle_sync: parked long-polls")
	nativeAddr := flag.String("native", "tcp://127.0.0.1:8009", "native_*: Hongyan's native protocol address")
	nativeConns := flag.Int("native-conns", 10000, "native_idle: idle connections")
	nativeUsers := flag.Int("native-users", 100, "native_idle: users the connections log in as")
	nativeMembers := flag.Int("native-members", 1000, "native_fanout: connected room members")
	nativeRate := flag.Float64("native-rate", 50, "native_fanout: messages per second")
	nativeDur := flag.Duration("native-duration", 15*time.Second, "native_fanout: how long to send")
	socialPairs := flag.Int("social-pairs", 200, "native_social: requester and target pairs")
	flag.Parse()

	cfg := loadgen.Config{
		Base:   strings.TrimSuffix(*hs, "/"),
		Prefix: fmt.Sprintf("lg%x", rand.Uint32()),
		HTTP:   loadgen.NewHTTP(max(*receivers, *idleClients) + 64),
	}
	if *pid != 0 {
		cfg.Proc = &loadgen.Process{PID: *pid}
	}
	ctx := context.Background()
	enc := json.NewEncoder(os.Stdout)
	failed := false
	for _, sc := range strings.Split(*scenarios, ",") {
		start := time.Now()
		var r loadgen.Result
		var err error
		switch sc {
		case "idle":
			r, err = loadgen.Idle(cfg)
		case "register":
			r, err = loadgen.RunRegister(ctx, cfg, *users, *regConc)
		case "send":
			r, err = loadgen.RunSend(ctx, cfg, *sendN, *senders, *members)
		case "fanout":
			r, err = loadgen.RunFanout(ctx, cfg, *receivers, *rate, *fanDur)
		case "rooms":
			r, err = loadgen.RunRooms(ctx, cfg, *rooms, *joiners)
		case "initial_sync":
			r, err = loadgen.RunInitialSync(ctx, cfg, *syncRooms, *history)
		case "idle_sync":
			r, err = loadgen.RunIdle(ctx, cfg, *idleClients)
		case "native_idle":
			r, err = loadgen.RunNativeIdle(ctx, cfg, *nativeAddr, *nativeConns, *nativeUsers)
		case "native_fanout":
			r, err = loadgen.RunNativeFanout(ctx, cfg, *nativeAddr, *nativeMembers, *nativeRate, *nativeDur)
		case "native_social":
			r, err = loadgen.RunNativeSocial(ctx, cfg, *nativeAddr, *socialPairs)
		default:
			err = fmt.Errorf("unknown scenario %q", sc)
		}
		if err != nil {
			slog.Error("scenario failed", "scenario", sc, "err", err)
			r = loadgen.Result{"scenario": sc, "error": err.Error()}
			failed = true
		}
		if *label != "" {
			r["label"] = *label
		}
		r["wall_s"] = time.Since(start).Round(time.Millisecond).Seconds()
		_ = enc.Encode(r)
	}
	if failed {
		os.Exit(1)
	}
}
