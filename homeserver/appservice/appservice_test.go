package appservice_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native/sdk"
)

// echoBot runs the bridge's event loop: its virtual user @echo_bot joins rooms
// it is invited to and answers "!echo X" with "echo: X", stamped with the
// original message's time plus one second (the ts a bridge asserts).
func echoBot(ctx context.Context, t *testing.T, b *bridge) {
	bot := b.AS.Intent(id.UserID("@echo_bot:localhost"))
	for {
		var evt *event.Event
		select {
		case <-ctx.Done():
			return
		case evt = <-b.AS.Events:
		}
		_ = evt.Content.ParseRaw(evt.Type)
		switch {
		case evt.Type == event.StateMember && evt.GetStateKey() == bot.UserID.String() && evt.Content.AsMember().Membership == event.MembershipInvite:
			if _, err := bot.JoinRoomByID(ctx, evt.RoomID); err != nil {
				t.Errorf("bot join: %v", err)
			}
		case evt.Type == event.EventMessage && evt.Sender != bot.UserID:
			body := evt.Content.AsMessage().Body
			if text, ok := strings.CutPrefix(body, "!echo "); ok {
				_, err := bot.SendMessageEvent(ctx, evt.RoomID, event.EventMessage,
					&event.MessageEventContent{MsgType: event.MsgText, Body: "echo: " + text},
					mautrix.ReqSendEvent{Timestamp: evt.Timestamp + 1000})
				if err != nil {
					t.Errorf("bot reply: %v", err)
				}
			}
		}
	}
}

// TestBotAnswersNativeAndMatrixUsers is the whole round trip with a bot
// written with a third-party library: it registers its virtual user, is
// invited, receives the room's events in transactions and replies, as its
// virtual user, to a message from a native-protocol client and one from a
// Matrix client; both see the replies, with the timestamps the bot asserted.
func TestBotAnswersNativeAndMatrixUsers(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		b := newBridge(t, "echo", "echobridge", "")
		srv := testserver.Start(t, d, withBridges(b))
		b.connect(t, srv)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		bot := b.AS.Intent("@echo_bot:localhost")
		if err := bot.EnsureRegistered(ctx); err != nil {
			t.Fatalf("bot registers its virtual user: %v", err)
		}
		go echoBot(ctx, t, b)

		alice := srv.Register(t, "alice", "pw-alice")
		srv.Register(t, "nat", "pw-nat")
		var room struct {
			RoomID string `json:"room_id"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat",
			"invite": []string{"@echo_bot:localhost"}}, &room)

		nat, err := sdk.Dial(ctx, sdk.Options{Addr: srv.NativeAddr, User: "nat", Password: "pw-nat", NoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		defer nat.Close()
		if _, err := nat.Join(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the bot's join", func() bool {
			var members struct {
				Joined map[string]any `json:"joined"`
			}
			alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room.RoomID+"/joined_members", nil, &members)
			_, ok := members.Joined["@echo_bot:localhost"]
			return ok
		})

		if _, err := nat.SendText(ctx, room.RoomID, "!echo from native"); err != nil {
			t.Fatal(err)
		}
		var matrixSent struct {
			EventID string `json:"event_id"`
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/t1",
			map[string]string{"msgtype": "m.text", "body": "!echo from matrix"}, &matrixSent)

		// The native client sees both replies, from the bot's virtual user.
		want := map[string]bool{"echo: from native": false, "echo: from matrix": false}
		originTS := map[string]int64{}
		deadline := time.After(20 * time.Second)
		for !want["echo: from native"] || !want["echo: from matrix"] {
			select {
			case p := <-nat.Events():
				if p.Event == nil {
					continue
				}
				ev := p.Event.Event
				body, _ := ev.Content["body"].(string)
				if ev.Type == "m.room.message" {
					originTS[body] = ev.OriginServerTS
				}
				if _, ok := want[body]; ok {
					if ev.Sender != "@echo_bot:localhost" {
						t.Errorf("reply %q sent by %s; want @echo_bot:localhost", body, ev.Sender)
					}
					want[body] = true
				}
			case <-deadline:
				t.Fatalf("native client saw replies %v; want both", want)
			}
		}
		for _, src := range []string{"native", "matrix"} {
			if got, orig := originTS["echo: from "+src], originTS["!echo from "+src]; got != orig+1000 {
				t.Errorf("reply to %s: origin_server_ts %d; want the asserted %d", src, got, orig+1000)
			}
		}

		// The ping reaches the bot and comes back.
		var pong struct {
			DurationMs *int64 `json:"duration_ms"`
		}
		as := srv.Client(t).WithToken("as-echo-secret")
		as.MustDo("POST", "/_matrix/client/v1/appservice/echo/ping", map[string]string{"transaction_id": "p1"}, &pong)
		if pong.DurationMs == nil {
			t.Error("ping: no duration_ms")
		}
		// Every transaction carried the hs_token.
		for _, tx := range b.seen() {
			if tx.Auth != "Bearer hs-echo-secret" {
				t.Errorf("transaction %s: Authorization %q; want the hs_token", tx.ID, tx.Auth)
			}
		}
	})
}

// TestEphemeralAndToDevice checks what a service that asked for them is pushed
// besides room events: typing and receipts in its users' rooms (MSC2409 /
// receive_ephemeral) and to-device messages for its users' devices (MSC3202).
func TestEphemeralAndToDevice(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, d storage.Dialect) {
		b := newBridge(t, "eph", "ephbot", "receive_ephemeral: true\norg.matrix.msc3202: true\n")
		srv := testserver.Start(t, d, withBridges(b))
		b.connect(t, srv)
		as := srv.Client(t).WithToken("as-eph-secret")
		as.MustDo("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "eph_bob", "inhibit_login": true}, nil)
		var sess struct {
			DeviceID string `json:"device_id"`
		}
		as.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.application_service",
			"identifier": map[string]string{"type": "m.id.user", "user": "eph_bob"}}, &sess)

		alice := srv.Register(t, "alice", "pw-alice")
		var room struct {
			RoomID string `json:"room_id"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{"@eph_bob:localhost"}}, &room)
		as.MustDo("POST", "/_matrix/client/v3/rooms/"+room.RoomID+"/join?user_id=@eph_bob:localhost", map[string]any{}, nil)

		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/typing/@alice:localhost", map[string]any{"typing": true, "timeout": 30000}, nil)
		var sent struct {
			EventID string `json:"event_id"`
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/t1", map[string]string{"msgtype": "m.text", "body": "hi"}, &sent)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+room.RoomID+"/receipt/m.read/"+sent.EventID, map[string]any{}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test/td1", map[string]any{"messages": map[string]any{
			"@eph_bob:localhost": map[string]any{sess.DeviceID: map[string]string{"secret": "for bob"}}}}, nil)

		var typed, receipted, toDevice bool
		deadline := time.After(20 * time.Second)
		for !typed || !receipted || !toDevice {
			select {
			case evt := <-b.AS.Events:
				switch evt.Type.Type {
				case "m.typing":
					if evt.RoomID.String() == room.RoomID && strings.Contains(string(evt.Content.VeryRaw), "@alice:localhost") {
						typed = true
					}
				case "m.receipt":
					if evt.RoomID.String() == room.RoomID && strings.Contains(string(evt.Content.VeryRaw), sent.EventID) {
						receipted = true
					}
				}
			case evt := <-b.AS.ToDeviceEvents:
				if evt.Type.Type == "m.test" && evt.ToDeviceID.String() == sess.DeviceID && evt.Sender == "@alice:localhost" &&
					strings.Contains(string(evt.Content.VeryRaw), "for bob") {
					toDevice = true
				}
			case <-deadline:
				t.Fatalf("service got typing %v, receipt %v, to-device %v; want all", typed, receipted, toDevice)
			}
		}
	})
}
