// Command hongyan-cli is a terminal chat client on Hongyan's native protocol (the
// Go SDK in native/sdk). A person types into it; a bot pipes lines into it. Every
// line that is not a command is sent to the open room; messages arriving in any
// room are printed as they come.
//
//	hongyan-cli -addr tcp://127.0.0.1:8009 -user alice -password secret [-room !id:server]
//
// Commands: /rooms, /open ROOM, /join ROOM, /create NAME [@user …], /invite @user,
// /leave, /history [N], /me TEXT, /quit.
//
// Friends and groups: /friend @user [MESSAGE], /requests, /accept @user,
// /decline @user, /cancel @user, /friends, /unfriend @user, /block @user,
// /unblock @user, /group NAME [@user …], /groups, /members, /kick @user,
// /transfer @user, /rename NAME, /mute, /unmute, /dissolve.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hongyan-cli:", err)
		os.Exit(1)
	}
}

type cli struct {
	c    *sdk.Client
	out  io.Writer
	mu   sync.Mutex
	room string            // the open room
	name map[string]string // room ID → name, for display
}

func run(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("hongyan-cli", flag.ContinueOnError)
	addr := fs.String("addr", "tcp://127.0.0.1:8009", "server: tcp://, tls://, ws:// or wss:// address")
	user := fs.String("user", "", "user name (with -password)")
	password := fs.String("password", os.Getenv("HONGYAN_PASSWORD"), "password (or $HONGYAN_PASSWORD)")
	token := fs.String("token", os.Getenv("HONGYAN_TOKEN"), "access token (or $HONGYAN_TOKEN) instead of a password")
	codecName := fs.String("codec", "msgpack", "json, msgpack or cbor")
	room := fs.String("room", "", "room to open at start (ID or alias)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	codec, err := native.ParseCodec(*codecName)
	if err != nil {
		return err
	}
	if *token == "" && (*user == "" || *password == "") {
		return errors.New("give -user and -password, or -token")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	c, err := sdk.Dial(ctx, sdk.Options{Addr: *addr, Codec: codec, User: *user, Password: *password, Token: *token, ClientName: "hongyan-cli"})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	t := &cli{c: c, out: out, name: map[string]string{}}
	t.printf("* logged in as %s (device %s)\n", c.UserID, c.DeviceID)
	t.refreshRooms()
	if *room != "" {
		t.command("/open " + *room)
	}
	go t.receive()

	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if line == "/quit" {
			return nil
		}
		t.command(line)
	}
	return sc.Err()
}

func (t *cli) printf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.out, format, args...)
}

func (t *cli) label(roomID string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.name[roomID]; n != "" {
		return n
	}
	return roomID
}

func (t *cli) refreshRooms() []native.RoomInfo {
	rooms, err := t.c.Rooms(context.Background())
	if err != nil {
		t.printf("! %v\n", err)
		return nil
	}
	t.mu.Lock()
	for _, r := range rooms {
		t.name[r.RoomID] = r.Name
	}
	t.mu.Unlock()
	return rooms
}

// command runs one input line.
func (t *cli) command(line string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	t.mu.Lock()
	room := t.room
	t.mu.Unlock()
	var err error
	switch cmd {
	case "/rooms":
		for i, r := range t.refreshRooms() {
			t.printf("  %d. %s  %s  (%s)\n", i+1, r.RoomID, r.Name, r.Membership)
		}
	case "/open", "/join":
		id := arg
		if cmd == "/join" || strings.HasPrefix(arg, "#") {
			id, err = t.c.Join(ctx, arg)
		}
		if err == nil {
			t.mu.Lock()
			t.room = id
			t.mu.Unlock()
			t.refreshRooms()
			t.printf("* room %s is open\n", t.label(id))
			err = t.history(ctx, id, 10)
		}
	case "/create":
		fields := strings.Fields(arg)
		if len(fields) == 0 {
			t.printf("! usage: /create NAME [@user …]\n")
			return
		}
		var id string
		id, err = t.c.CreateRoom(ctx, native.CreateRoom{Name: fields[0], Invite: fields[1:]})
		if err == nil {
			t.mu.Lock()
			t.room, t.name[id] = id, fields[0]
			t.mu.Unlock()
			t.printf("* created %s (%s), now open\n", fields[0], id)
		}
	case "/invite":
		err = t.c.Invite(ctx, room, arg)
	case "/leave":
		err = t.c.Leave(ctx, room)
	case "/history":
		n, _ := strconv.Atoi(arg)
		if n <= 0 {
			n = 20
		}
		err = t.history(ctx, room, n)
	case "/me":
		_, err = t.c.Send(ctx, native.Send{RoomID: room, Kind: "emote", Body: arg})
	case "/friend", "/requests", "/accept", "/decline", "/cancel", "/friends", "/unfriend", "/block", "/unblock":
		err = t.friendCommand(ctx, cmd, arg)
	case "/group", "/groups", "/members", "/kick", "/transfer", "/rename", "/mute", "/unmute", "/dissolve":
		err = t.groupCommand(ctx, cmd, arg, room)
	default:
		if strings.HasPrefix(cmd, "/") {
			t.printf("! unknown command %s\n", cmd)
			return
		}
		if room == "" {
			t.printf("! open a room first: /rooms, then /open ROOM\n")
			return
		}
		_, err = t.c.SendText(ctx, room, line)
	}
	if err != nil {
		t.printf("! %v\n", err)
	}
}

func (t *cli) history(ctx context.Context, roomID string, n int) error {
	page, err := t.c.History(ctx, roomID, 0, n)
	if err != nil {
		return err
	}
	for i := len(page.Events) - 1; i >= 0; i-- {
		t.show(page.Events[i])
	}
	return nil
}

// receive prints pushes as they arrive.
func (t *cli) receive() {
	for p := range t.c.Events() {
		switch {
		case p.Event != nil:
			t.show(p.Event.Event)
		case p.Typing != nil:
			t.mu.Lock()
			open := p.Typing.RoomID == t.room
			t.mu.Unlock()
			var others []string
			for _, u := range p.Typing.UserIDs {
				if u != t.c.UserID {
					others = append(others, u)
				}
			}
			if open && len(others) > 0 {
				t.printf("  … %s typing\n", strings.Join(others, ", "))
			}
		case p.Social != nil:
			t.showSocial(p.Social)
		}
	}
}

// show prints one event as a chat line.
func (t *cli) show(e native.Event) {
	ts := time.UnixMilli(e.OriginServerTS).Format("15:04:05")
	where := t.label(e.RoomID)
	body, _ := e.Content["body"].(string)
	switch e.Type {
	case "m.room.message":
		if rel, ok := e.Content["m.relates_to"].(map[string]any); ok && rel["rel_type"] == "m.replace" {
			if nc, ok := e.Content["m.new_content"].(map[string]any); ok {
				body, _ = nc["body"].(string)
			}
			t.printf("%s [%s] %s (edited): %s\n", ts, where, e.Sender, body)
			return
		}
		if e.Content["msgtype"] == "m.emote" {
			t.printf("%s [%s] * %s %s\n", ts, where, e.Sender, body)
			return
		}
		t.printf("%s [%s] %s: %s\n", ts, where, e.Sender, body)
	case "m.room.member":
		if e.Content["membership"] == "invite" && e.StateKey != nil && *e.StateKey == t.c.UserID {
			t.printf("%s * %s invited you to %s — /join %s\n", ts, e.Sender, where, e.RoomID)
			return
		}
		who := e.Sender
		if e.StateKey != nil {
			who = *e.StateKey
		}
		t.printf("%s [%s] * %s: %v\n", ts, where, who, e.Content["membership"])
	case "m.room.redaction":
		t.printf("%s [%s] * %s deleted a message\n", ts, where, e.Sender)
	case "m.reaction":
		if rel, ok := e.Content["m.relates_to"].(map[string]any); ok {
			t.printf("%s [%s] * %s reacted %v\n", ts, where, e.Sender, rel["key"])
		}
	}
}
