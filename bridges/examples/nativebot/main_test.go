package main

import (
	"context"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native/sdk"
)

func TestAnswer(t *testing.T) {
	for _, c := range []struct {
		body, want string
		ok         bool
	}{
		{"!ping", "pong", true},
		{"  !echo hello there ", "hello there", true},
		{"!echo", "usage: !echo TEXT", true},
		{"!time", "2026-01-02T03:04:05Z", true},
		{"hello", "", false},
	} {
		ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli()
		if got, ok := answer(c.body, ts); got != c.want || ok != c.ok {
			t.Errorf("answer(%q) = %q, %v; want %q, %v", c.body, got, ok, c.want, c.ok)
		}
	}
}

// TestBotAnswersAMatrixUser runs the bot against a real server: invited to a
// private room by a Matrix client, it joins and answers !ping there.
func TestBotAnswersAMatrixUser(t *testing.T) {
	t.Parallel()
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			srv := testserver.Start(t, d)
			srv.Register(t, "bot", "pw-bot-secret")
			alice := srv.Register(t, "alice", "pw-alice")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c, err := sdk.Dial(ctx, sdk.Options{Addr: srv.NativeAddr, User: "bot", Password: "pw-bot-secret", NoReconnect: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go serve(ctx, c)

			var room struct {
				RoomID string `json:"room_id"`
			}
			alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{"@bot:localhost"}}, &room)
			waitJoined(t, alice, room.RoomID, "@bot:localhost")
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/p1", map[string]string{"msgtype": "m.text", "body": "!ping"}, nil)
			deadline := time.Now().Add(20 * time.Second)
			for {
				var msgs struct {
					Chunk []struct {
						Sender  string         `json:"sender"`
						Content map[string]any `json:"content"`
					} `json:"chunk"`
				}
				alice.MustDo("GET", "/_matrix/client/v3/rooms/"+room.RoomID+"/messages?dir=b&limit=5", nil, &msgs)
				if len(msgs.Chunk) > 0 && msgs.Chunk[0].Sender == "@bot:localhost" && msgs.Chunk[0].Content["body"] == "pong" {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("no pong from the bot; latest events %+v", msgs.Chunk)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

func waitJoined(t *testing.T, c *testserver.Client, roomID, userID string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var members struct {
			Joined map[string]any `json:"joined"`
		}
		c.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/joined_members", nil, &members)
		if _, ok := members.Joined[userID]; ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never joined %s", userID, roomID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
