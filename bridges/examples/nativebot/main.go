// Command nativebot is an example bot on Hongyan's native protocol (native/sdk):
// one connection, pushes in order with nothing lost across reconnects, no
// registration file and no homeserver configuration. It answers commands in the
// rooms it is in:
//
//	!ping        pong
//	!echo TEXT   TEXT
//	!time        the server time of the command's event
//
//	nativebot -addr tcp://127.0.0.1:8009 -user bot -password ... -join '!room:example.org'
//
// A bot that must act as many users, or be pushed every event of a namespace, is
// an application service instead: see bridges/webhook.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hongyan/hongyan/native/sdk"
)

func main() {
	addr := flag.String("addr", "tcp://127.0.0.1:8009", "the server's native listener")
	user := flag.String("user", "", "the bot's user name")
	password := flag.String("password", os.Getenv("NATIVEBOT_PASSWORD"), "its password (or NATIVEBOT_PASSWORD)")
	join := flag.String("join", "", "comma-separated rooms (IDs or aliases) to join at start")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := sdk.Dial(ctx, sdk.Options{Addr: *addr, User: *user, Password: *password, ClientName: "nativebot"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nativebot:", err)
		os.Exit(1)
	}
	defer c.Close()
	for _, r := range strings.Split(*join, ",") {
		if r = strings.TrimSpace(r); r != "" {
			if _, err := c.Join(ctx, r); err != nil {
				slog.Warn("join", "room", r, "err", err)
			}
		}
	}
	serve(ctx, c)
}

// serve answers commands until ctx ends or the client closes. Invites to the
// bot are accepted.
func serve(ctx context.Context, c *sdk.Client) {
	for {
		var p sdk.Push
		select {
		case <-ctx.Done():
			return
		case <-c.Done():
			return
		case p = <-c.Events():
		}
		if p.Event == nil {
			continue
		}
		ev := p.Event.Event
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == c.UserID && ev.Content["membership"] == "invite" {
			if _, err := c.Join(ctx, ev.RoomID); err != nil {
				slog.Warn("accept invite", "room", ev.RoomID, "err", err)
			}
			continue
		}
		if ev.Type != "m.room.message" || ev.Sender == c.UserID {
			continue
		}
		body, _ := ev.Content["body"].(string)
		if reply, ok := answer(body, ev.OriginServerTS); ok {
			if _, err := c.SendText(ctx, ev.RoomID, reply); err != nil {
				slog.Warn("reply", "room", ev.RoomID, "err", err)
			}
		}
	}
}

// answer is the bot's whole logic: a command's reply, or false for anything else.
func answer(body string, ts int64) (string, bool) {
	cmd, arg, _ := strings.Cut(strings.TrimSpace(body), " ")
	switch cmd {
	case "!ping":
		return "pong", true
	case "!echo":
		if arg == "" {
			return "usage: !echo TEXT", true
		}
		return arg, true
	case "!time":
		return time.UnixMilli(ts).UTC().Format(time.RFC3339), true
	}
	return "", false
}
