package native_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

func forEachEngine(t *testing.T, fn func(t *testing.T, srv *testserver.Server), opts ...testserver.Option) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, testserver.Start(t, d, opts...))
		})
	}
}

func dial(t *testing.T, srv *testserver.Server, opts sdk.Options) *sdk.Client {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = srv.NativeAddr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", opts.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next waits for the next push matching keep.
func next(t *testing.T, c *sdk.Client, what string, keep func(sdk.Push) bool) sdk.Push {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-c.Events():
			if keep(p) {
				return p
			}
		case <-deadline:
			t.Fatalf("no %s within 10 s", what)
		}
	}
}

func eventOf(typ string, match func(native.Event) bool) func(sdk.Push) bool {
	return func(p sdk.Push) bool {
		return p.Event != nil && p.Event.Event.Type == typ && (match == nil || match(p.Event.Event))
	}
}

// matrixSide follows a room through /sync as a Matrix client does.
type matrixSide struct {
	cli   *mautrix.Client
	since string
}

// waitFor syncs until check is satisfied by a room's timeline or ephemeral events.
func (m *matrixSide) waitFor(t *testing.T, roomID string, what string, check func(*event.Event) bool) *event.Event {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := m.cli.SyncRequest(ctx, 1000, m.since, "", false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		m.since = resp.NextBatch
		if room := resp.Rooms.Join[id.RoomID(roomID)]; room != nil {
			for _, ev := range append(room.Timeline.Events, room.Ephemeral.Events...) {
				ev.RoomID = id.RoomID(roomID)
				if err := ev.Content.ParseRaw(ev.Type); err != nil && ev.Type != event.EventRedaction {
					continue
				}
				if check(ev) {
					return ev
				}
			}
		}
	}
	t.Fatalf("matrix client saw no %s within 10 s", what)
	return nil
}

// TestInteropWithMatrixClient: a native client and a Matrix client (mautrix-go over
// HTTP) in one room see each other's messages, edits, redactions, typing and
// receipts.
func TestInteropWithMatrixClient(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		bob := srv.Register(t, "bob", "pw")
		srv.Register(t, "alice", "pw")
		cli, err := mautrix.NewClient(srv.URL, id.UserID(bob.UserID), bob.Token)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "interop"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(resp.RoomID)
		matrix := &matrixSide{cli: cli}
		matrix.waitFor(t, roomID, "the room", func(*event.Event) bool { return true })

		alice := dial(t, srv, sdk.Options{User: "alice", Password: "pw", ClientName: "interop-test"})
		if got, err := alice.Join(ctx, roomID); err != nil || got != roomID {
			t.Fatalf("join = %q, %v", got, err)
		}
		// Alice's own join arrives as the room's first push.
		join := next(t, alice, "alice's join", eventOf("m.room.member", func(e native.Event) bool { return e.Content["membership"] == "join" }))
		if join.Event.Seq < 2 {
			t.Errorf("join seq = %d; want after the room's creation events", join.Event.Seq)
		}

		// Matrix → native: message, edit, redaction.
		sent, err := cli.SendText(ctx, id.RoomID(roomID), "hello from matrix")
		if err != nil {
			t.Fatal(err)
		}
		msg := next(t, alice, "bob's message", eventOf("m.room.message", nil))
		if msg.Event.Event.Content["body"] != "hello from matrix" || msg.Event.Event.EventID != string(sent.EventID) || msg.Event.Seq != join.Event.Seq+1 {
			t.Errorf("alice got %+v; want bob's message at seq %d", msg.Event, join.Event.Seq+1)
		}
		_, err = cli.SendMessageEvent(ctx, id.RoomID(roomID), event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "* hello, edited",
			NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "hello, edited"},
			RelatesTo:  &event.RelatesTo{Type: event.RelReplace, EventID: sent.EventID},
		})
		if err != nil {
			t.Fatal(err)
		}
		edit := next(t, alice, "bob's edit", eventOf("m.room.message", nil))
		rel, _ := edit.Event.Event.Content["m.relates_to"].(map[string]any)
		newContent, _ := edit.Event.Event.Content["m.new_content"].(map[string]any)
		if rel["rel_type"] != "m.replace" || rel["event_id"] != string(sent.EventID) || newContent["body"] != "hello, edited" {
			t.Errorf("edit push = %+v", edit.Event.Event.Content)
		}
		if _, err := cli.RedactEvent(ctx, id.RoomID(roomID), sent.EventID); err != nil {
			t.Fatal(err)
		}
		red := next(t, alice, "bob's redaction", eventOf("m.room.redaction", nil))
		if red.Event.Event.Redacts != string(sent.EventID) {
			t.Errorf("redaction redacts %q; want %s", red.Event.Event.Redacts, sent.EventID)
		}

		// Native → Matrix: message, edit, reaction, redaction.
		mine, err := alice.SendText(ctx, roomID, "hello from native")
		if err != nil {
			t.Fatal(err)
		}
		if mine.Seq != red.Event.Seq+1 {
			t.Errorf("send seq = %d; want %d", mine.Seq, red.Event.Seq+1)
		}
		matrix.waitFor(t, roomID, "alice's message", func(ev *event.Event) bool {
			return ev.ID == id.EventID(mine.EventID) && ev.Content.AsMessage().Body == "hello from native"
		})
		if _, err := alice.Edit(ctx, roomID, mine.EventID, "hello from native, edited"); err != nil {
			t.Fatal(err)
		}
		matrix.waitFor(t, roomID, "alice's edit", func(ev *event.Event) bool {
			m := ev.Content.AsMessage()
			return m.NewContent != nil && m.NewContent.Body == "hello from native, edited" && m.RelatesTo.GetReplaceID() == id.EventID(mine.EventID)
		})
		if _, err := alice.React(ctx, roomID, string(sent.EventID), "👍"); err != nil {
			t.Fatal(err)
		}
		matrix.waitFor(t, roomID, "alice's reaction", func(ev *event.Event) bool {
			return ev.Type == event.EventReaction && ev.Content.AsReaction().RelatesTo.Key == "👍"
		})
		if _, err := alice.Redact(ctx, roomID, mine.EventID, "oops"); err != nil {
			t.Fatal(err)
		}
		matrix.waitFor(t, roomID, "alice's redaction", func(ev *event.Event) bool {
			return ev.Type == event.EventRedaction && ev.Redacts == id.EventID(mine.EventID)
		})

		// Typing both ways.
		if _, err := cli.UserTyping(ctx, id.RoomID(roomID), true, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		next(t, alice, "bob typing", func(p sdk.Push) bool { return p.Typing != nil && slices.Contains(p.Typing.UserIDs, bob.UserID) })
		if err := alice.Typing(ctx, roomID, true, 10_000); err != nil {
			t.Fatal(err)
		}
		matrix.waitFor(t, roomID, "alice typing", func(ev *event.Event) bool {
			return ev.Type == event.EphemeralEventTyping && slices.Contains(ev.Content.AsTyping().UserIDs, id.UserID(alice.UserID))
		})

		// Receipts both ways.
		if err := cli.SendReceipt(ctx, id.RoomID(roomID), id.EventID(mine.EventID), event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		next(t, alice, "bob's receipt", func(p sdk.Push) bool {
			return p.Receipt != nil && p.Receipt.UserID == bob.UserID && p.Receipt.EventID == mine.EventID && p.Receipt.Type == "m.read"
		})
		if err := alice.Receipt(ctx, roomID, string(sent.EventID)); err != nil {
			t.Fatal(err)
		}
		matrix.waitFor(t, roomID, "alice's receipt", func(ev *event.Event) bool {
			if ev.Type != event.EphemeralEventReceipt {
				return false
			}
			_, ok := (*ev.Content.AsReceipt())[sent.EventID][event.ReceiptTypeRead][id.UserID(alice.UserID)]
			return ok
		})
	})
}

// TestOpsMapOntoTheCore drives the other ops: rooms, history, state, profile,
// presence, media, kinds of messages, and their failure paths.
func TestOpsMapOntoTheCore(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		bob := srv.Register(t, "bob", "pw")
		srv.Register(t, "alice", "pw")
		alice := dial(t, srv, sdk.Options{User: "alice", Password: "pw"})
		roomID, err := alice.CreateRoom(ctx, native.CreateRoom{Name: "native room", Invite: []string{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		rooms, err := alice.Rooms(ctx)
		if err != nil || len(rooms) != 1 || rooms[0].RoomID != roomID || rooms[0].Name != "native room" || rooms[0].Membership != "join" {
			t.Fatalf("rooms = %+v, %v", rooms, err)
		}
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)

		mxc, err := alice.Upload(ctx, "image/png", "pixel.png", []byte("\x89PNG not really"))
		if err != nil {
			t.Fatal(err)
		}
		file, err := alice.Download(ctx, mxc)
		if err != nil || string(file.Data) != "\x89PNG not really" || file.ContentType != "image/png" || file.Filename != "pixel.png" {
			t.Fatalf("download = %+v, %v", file, err)
		}
		for i, req := range []native.Send{
			{Kind: "text", Body: "plain"},
			{Kind: "notice", Body: "a notice"},
			{Kind: "emote", Body: "waves"},
			{Kind: "image", Body: "pixel.png", URL: mxc, Info: map[string]any{"mimetype": "image/png", "w": 1, "h": 1}},
			{Kind: "location", Body: "Paris", GeoURI: "geo:48.85,2.35"},
			{Kind: "custom", Type: "org.example.poll", Content: map[string]any{"question": "tea?", "answers": []any{"yes", "no"}}},
		} {
			req.RoomID = roomID
			req.TxnID = fmt.Sprintf("kind-%d", i)
			if _, err := alice.Send(ctx, req); err != nil {
				t.Errorf("send %s: %v", req.Kind, err)
			}
		}
		// The same txn_id again is the same event.
		a, _ := alice.Send(ctx, native.Send{RoomID: roomID, TxnID: "kind-0", Body: "plain"})
		b, _ := alice.Send(ctx, native.Send{RoomID: roomID, TxnID: "kind-0", Body: "plain"})
		if a.EventID == "" || a.EventID != b.EventID {
			t.Errorf("idempotent sends = %s, %s", a.EventID, b.EventID)
		}
		root, _ := alice.SendText(ctx, roomID, "thread root")
		reply, err := alice.Send(ctx, native.Send{RoomID: roomID, Body: "in the thread", ThreadRoot: root.EventID})
		if err != nil {
			t.Fatal(err)
		}

		// History pages backwards by seq, and the Matrix API sees the same events.
		var bodies []string
		before := int64(0)
		for {
			page, err := alice.History(ctx, roomID, before, 4)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Events {
				if e.Type == "m.room.message" {
					bodies = append(bodies, fmt.Sprint(e.Content["body"]))
				}
				if e.EventID == reply.EventID {
					rel, _ := e.Content["m.relates_to"].(map[string]any)
					if rel["rel_type"] != "m.thread" || rel["event_id"] != root.EventID {
						t.Errorf("thread reply relates_to = %v", rel)
					}
				}
			}
			if page.NextBeforeSeq == 0 {
				break
			}
			before = page.NextBeforeSeq
		}
		want := []string{"in the thread", "thread root", "Paris", "pixel.png", "waves", "a notice", "plain"}
		if !slices.Equal(bodies, want) {
			t.Errorf("history bodies = %q; want %q", bodies, want)
		}
		var msgs struct {
			Chunk []struct {
				Type    string          `json:"type"`
				Content json.RawMessage `json:"content"`
			} `json:"chunk"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=b&limit=3", nil, &msgs)
		if len(msgs.Chunk) != 3 || msgs.Chunk[2].Type != "org.example.poll" {
			t.Errorf("matrix view of the latest events = %+v", msgs.Chunk)
		}

		state, err := alice.State(ctx, roomID)
		if err != nil || len(state) < 5 {
			t.Errorf("state = %d events, %v", len(state), err)
		}
		name := "Alice N."
		if err := alice.SetProfile(ctx, native.Profile{DisplayName: &name}); err != nil {
			t.Fatal(err)
		}
		if p, err := alice.Profile(ctx, ""); err != nil || p.DisplayName == nil || *p.DisplayName != name {
			t.Errorf("profile = %+v, %v", p, err)
		}
		if err := alice.SetPresence(ctx, "unavailable", nil); err != nil {
			t.Fatal(err)
		}
		if p, err := alice.Presence(ctx, alice.UserID); err != nil || p.Presence != "unavailable" {
			t.Errorf("presence = %+v, %v", p, err)
		}

		var bobsSend struct {
			EventID string `json:"event_id"`
		}
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/b1", map[string]any{"msgtype": "m.text", "body": "bob's"}, &bobsSend)
		bobsMessage := bobsSend.EventID

		// Failure paths carry the Matrix error codes.
		for _, tc := range []struct {
			name, op string
			req      any
			code     string
		}{
			{"send to unknown room", "send", native.Send{RoomID: "!nope:localhost", Body: "x"}, "M_NOT_FOUND"},
			{"image without url", "send", native.Send{RoomID: roomID, Kind: "image", Body: "x"}, "M_INVALID_PARAM"},
			{"unknown kind", "send", native.Send{RoomID: roomID, Kind: "hologram"}, "M_INVALID_PARAM"},
			{"no room", "send", native.Send{Body: "x"}, "M_MISSING_PARAM"},
			{"edit someone else's", "edit", native.Edit{RoomID: roomID, EventID: bobsMessage, Body: "x"}, "M_FORBIDDEN"},
			{"edit a missing event", "edit", native.Edit{RoomID: roomID, EventID: "$missing", Body: "x"}, "M_NOT_FOUND"},
			{"typing elsewhere", "typing", native.Typing{RoomID: "!nope:localhost", Typing: true}, "M_FORBIDDEN"},
			{"bad presence", "presence", native.Presence{Presence: "dancing"}, "M_INVALID_PARAM"},
			{"wrong field type", "send", map[string]any{"room_id": 42}, "M_BAD_JSON"},
			{"unknown op", "teleport", struct{}{}, "M_UNRECOGNIZED"},
			{"bad mxc", "download", native.Download{ContentURI: "https://example.org/x"}, "M_INVALID_PARAM"},
			{"second resume", "resume", native.Resume{}, "M_BAD_STATE"},
		} {
			err := alice.Call(ctx, tc.op, tc.req, nil)
			if e, ok := err.(*native.Error); !ok || e.Code != tc.code {
				t.Errorf("%s: %v; want %s", tc.name, err, tc.code)
			}
		}
	})
}

// TestCodecsAndTransports runs a session in every codec over TCP, TLS and
// WebSocket: each sends a message with non-ASCII and nested content and receives
// it back as a push.
func TestCodecsAndTransports(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, storagetest.Engines()[0], func(c *config.Config) { c.Native.TLSListen = "127.0.0.1:0" })
	srv.Register(t, "alice", "pw")
	pem, err := os.ReadFile(filepath.Join(srv.Config.DataDir, "native-tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	ctx := context.Background()
	for _, transport := range []string{srv.NativeAddr, srv.NativeTLSAddr, srv.NativeWS} {
		for _, codec := range []native.Codec{native.JSON, native.MsgPack, native.CBOR} {
			t.Run(strings.SplitN(transport, ":", 2)[0]+"/"+codec.String(), func(t *testing.T) {
				c := dial(t, srv, sdk.Options{Addr: transport, Codec: codec, User: "alice", Password: "pw", TLS: &tls.Config{RootCAs: pool}})
				roomID, err := c.CreateRoom(ctx, native.CreateRoom{Name: "codec " + codec.String()})
				if err != nil {
					t.Fatal(err)
				}
				sent, err := c.Send(ctx, native.Send{RoomID: roomID, Kind: "custom", Type: "org.example.data",
					Content: map[string]any{"text": "你好 🌍", "n": 42, "nested": map[string]any{"list": []any{"a", true, -7}}}})
				if err != nil {
					t.Fatal(err)
				}
				p := next(t, c, "the message", eventOf("org.example.data", nil))
				content := p.Event.Event.Content
				nested, _ := content["nested"].(map[string]any)
				list, _ := nested["list"].([]any)
				if p.Event.Seq != sent.Seq || content["text"] != "你好 🌍" || fmt.Sprint(content["n"]) != "42" || len(list) != 3 || list[1] != true {
					t.Errorf("push = %+v; want the sent content at seq %d", p.Event, sent.Seq)
				}
			})
		}
	}
}
