package native_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// sees polls /messages on the user's server until a message with body arrives.
func sees(t *testing.T, c *testserver.Client, roomID, body string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var page struct {
			Chunk []struct {
				Type    string         `json:"type"`
				Content map[string]any `json:"content"`
			} `json:"chunk"`
		}
		c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil, &page)
		for _, ev := range page.Chunk {
			if ev.Type == "m.room.message" && ev.Content["body"] == body {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not see %q in %s within 15 s", c.UserID, body, roomID)
}

// errCode is the errcode of a native error reply, or "" for success.
func errCode(err error) string {
	var ne *native.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ne):
		return ne.Code
	default:
		return "not a native error: " + err.Error()
	}
}

// TestNativeJoinRemoteRoom: a native user on server A joins rooms hosted on server
// B through the native protocol — by B's alias (resolved over federation), and by
// a room ID that names no server (room version 12) with B in via — and B's Matrix
// user sees what the native user then says. Before the join rule moved into the
// core, native resolved aliases only locally and had no via: both joins failed.
func TestNativeJoinRemoteRoom(t *testing.T) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			a := testserver.Start(t, d, testserver.Federated)
			b := testserver.Start(t, d, testserver.Federated)
			bob := b.Register(t, "bob", "pw")
			alice := dial(t, a, sdk.Options{Token: a.Register(t, "alice", "pw").Token})
			onB := b.Config.ServerName

			var byAlias map[string]string
			bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "lobby"}, &byAlias)
			var byID map[string]string
			bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_version": "12"}, &byID)

			for _, tc := range []struct {
				name, room string
				via        []string
				wantRoom   string
				wantCode   string
			}{
				{"unknown alias on B", "#nope:" + onB, nil, "", "M_NOT_FOUND"},
				{"v12 room ID without via", byID["room_id"], nil, "", "M_NOT_FOUND"},
				{"alias on B", "#lobby:" + onB, nil, byAlias["room_id"], ""},
				{"v12 room ID via B", byID["room_id"], []string{onB}, byID["room_id"], ""},
			} {
				got, err := alice.Join(ctx, tc.room, tc.via...)
				if code := errCode(err); code != tc.wantCode || got != tc.wantRoom {
					t.Fatalf("%s: Join(%q, via %v) = %q, %q; want %q, %q", tc.name, tc.room, tc.via, got, code, tc.wantRoom, tc.wantCode)
				}
				if tc.wantCode != "" {
					continue
				}
				body := "hello from A in " + tc.name
				if _, err := alice.Send(ctx, native.Send{RoomID: got, Body: body}); err != nil {
					t.Fatalf("%s: send: %v", tc.name, err)
				}
				sees(t, bob, got, body)
			}
		})
	}
}
