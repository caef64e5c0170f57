package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hongyan/hongyan/native"
)

// RunNativeSocial measures how fast friend events reach the other party next to
// how fast a message does, over the native protocol. For each of pairs pairs, one
// user (over HTTP, the IM API) sends a friend request to another connected
// natively; the request's typed friend_request push is timed from the request's
// start. The target accepts, and the requester sends a message into the friends'
// room, whose event push is timed from the send's start. The first goes through
// the social service's consumer of the events stream; the second straight from
// the room's notice: the scenario shows what that extra hop costs. request_http
// is the request's own round trip (it creates a room and invites: several events),
// part of request_push.
func RunNativeSocial(ctx context.Context, c Config, addr string, pairs int) (Result, error) {
	r := Result{"scenario": "native_social", "pairs": pairs}
	users, _, err := c.register(ctx, 2*pairs, 8, "nsoc")
	if err != nil {
		return nil, err
	}
	var reqLat, reqHTTPLat, acceptLat, msgLat []time.Duration
	cpu, err := c.startCPU()
	if err != nil {
		return nil, err
	}
	for i := range pairs {
		requester, target := users[2*i], users[2*i+1]
		nc, err := dialNative(ctx, addr, target.Token)
		if err != nil {
			return nil, err
		}

		type frame struct {
			env  native.Envelope
			body []byte
		}
		pushes, done := make(chan frame, 64), make(chan struct{})
		go func() {
			defer close(pushes)
			for {
				_, body, err := native.ReadFrame(nc.r, native.MaxFrame)
				if err != nil {
					return
				}
				var env native.Envelope
				if native.Unmarshal(native.JSON, body, &env) != nil {
					continue
				}
				select {
				case pushes <- frame{env, body}:
				case <-done: // the pair is measured; the connection closes
					return
				}
			}
		}()
		stop := func() {
			close(done)
			nc.conn.Close()
		}
		wait := func(what string, match func(native.Envelope, []byte) bool) error {
			timeout := time.After(30 * time.Second)
			for {
				select {
				case f, ok := <-pushes:
					if !ok {
						return fmt.Errorf("%s: connection closed", what)
					}
					if match(f.env, f.body) {
						return nil
					}
				case <-timeout:
					return fmt.Errorf("no %s within 30 s", what)
				}
			}
		}

		start := time.Now()
		var req struct {
			RoomID string `json:"room_id"`
		}
		if err := requester.Do(ctx, http.MethodPost, "/_matrix/client/unstable/im.hongyan/friends/requests",
			map[string]string{"user_id": target.UserID, "message": "hi"}, &req); err != nil {
			stop()
			return nil, err
		}
		reqHTTPLat = append(reqHTTPLat, time.Since(start))
		if err := wait("friend_request push", func(env native.Envelope, _ []byte) bool { return env.Op == "friend_request" }); err != nil {
			stop()
			return nil, err
		}
		reqLat = append(reqLat, time.Since(start))

		start = time.Now()
		if err := target.Do(ctx, http.MethodPost, "/_matrix/client/unstable/im.hongyan/friends/requests/"+url.PathEscape(requester.UserID)+"/accept", map[string]any{}, nil); err != nil {
			stop()
			return nil, err
		}
		acceptLat = append(acceptLat, time.Since(start))

		start = time.Now()
		stamp := "t=" + strconv.FormatInt(start.UnixNano(), 10)
		if err := requester.Send(ctx, req.RoomID, "nsoc"+strconv.Itoa(i), stamp); err != nil {
			stop()
			return nil, err
		}
		if err := wait("message push", func(env native.Envelope, body []byte) bool {
			return env.Op == "event" && strings.Contains(string(body), stamp)
		}); err != nil {
			stop()
			return nil, err
		}
		msgLat = append(msgLat, time.Since(start))
		stop()
	}
	if err := cpu.stop(r); err != nil {
		return nil, err
	}
	percentiles(r, "request_push_", reqLat)
	percentiles(r, "request_http_", reqHTTPLat)
	percentiles(r, "accept_", acceptLat)
	percentiles(r, "message_push_", msgLat)
	return r, nil
}
