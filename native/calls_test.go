package native_test

import (
	"context"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// callPushOf waits for a typed call push of kind.
func callPushOf(t *testing.T, c *sdk.Client, kind string) *sdk.CallPush {
	t.Helper()
	return next(t, c, "call "+kind, func(p sdk.Push) bool { return p.Call != nil && p.Call.Kind == kind }).Call
}

// TestNativeCallWithMatrixClient: a native client rings a Matrix client in a
// DM; the Matrix client sees m.call.invite through /sync and answers over
// HTTP; the native client gets the answer as a typed call push, then hangs up
// and the Matrix client sees the hangup.
func TestNativeCallWithMatrixClient(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID}}, &created)
		room := created["room_id"]
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		a := dial(t, srv, sdk.Options{Token: alice.Token})

		if _, err := a.CallInvite(ctx, native.CallSignal{RoomID: room, CallID: "c1", PartyID: "alice-dev", SDP: "v=0 offer", Invitee: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if p := callPushOf(t, a, "invite"); p.SDP != "v=0 offer" || p.Lifetime != 60000 || p.Sender != alice.UserID {
			t.Fatalf("own invite push %+v", p)
		}
		since := waitCall(t, bob, room, "", "m.call.invite")
		bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.call.answer/a1", map[string]any{
			"call_id": "c1", "party_id": "bob-dev", "version": "1", "answer": map[string]any{"type": "answer", "sdp": "v=0 answer"}}, nil)
		if p := callPushOf(t, a, "answer"); p.SDP != "v=0 answer" || p.PartyID != "bob-dev" || p.RoomID != room {
			t.Fatalf("answer push %+v", p)
		}
		idx := 0
		if _, err := a.CallCandidates(ctx, native.CallSignal{RoomID: room, CallID: "c1", PartyID: "alice-dev",
			Candidates: []native.CallCandidate{{Candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ relay", SDPMLineIndex: &idx}, {}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.CallHangup(ctx, native.CallSignal{RoomID: room, CallID: "c1", PartyID: "alice-dev", Reason: "user_hangup"}); err != nil {
			t.Fatal(err)
		}
		waitCall(t, bob, room, since, "m.call.hangup")
	})
}

// waitCall syncs c until an event of type typ arrives in room; it returns the
// next_batch to sync on from.
func waitCall(t *testing.T, c *testserver.Client, room, since, typ string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var s struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							Type string `json:"type"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		q := "timeout=2000"
		if since != "" {
			q += "&since=" + since
		}
		c.MustDo("GET", "/_matrix/client/v3/sync?"+q, nil, &s)
		since = s.NextBatch
		for _, e := range s.Rooms.Join[room].Timeline.Events {
			if e.Type == typ {
				return since
			}
		}
	}
	t.Fatalf("%s never reached %s", typ, c.UserID)
	return ""
}

// TestNativeCallOpsRefuse: a non-member cannot ring into a room, and a call
// op without the fields its event needs is refused with a typed error.
func TestNativeCallOpsRefuse(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat"}, &created)
		room := created["room_id"]
		a := dial(t, srv, sdk.Options{Token: alice.Token})
		eve := dial(t, srv, sdk.Options{Token: srv.Register(t, "eve", "pw").Token})
		if _, err := eve.CallInvite(ctx, native.CallSignal{RoomID: room, CallID: "c1", PartyID: "p", SDP: "v=0"}); errCode(err) != "M_FORBIDDEN" {
			t.Errorf("eve's call_invite into alice's room = %v; want M_FORBIDDEN", err)
		}
		for name, tc := range map[string]struct {
			call func(context.Context, native.CallSignal) (native.Sent, error)
			sig  native.CallSignal
			code string
		}{
			"invite without sdp":    {a.CallInvite, native.CallSignal{RoomID: room, CallID: "c1", PartyID: "p"}, "M_BAD_JSON"},
			"answer without sdp":    {a.CallAnswer, native.CallSignal{RoomID: room, CallID: "c1", PartyID: "p"}, "M_BAD_JSON"},
			"candidate without mid": {a.CallCandidates, native.CallSignal{RoomID: room, CallID: "c1", PartyID: "p", Candidates: []native.CallCandidate{{Candidate: "candidate:1"}}}, "M_BAD_JSON"},
			"hangup without call":   {a.CallHangup, native.CallSignal{RoomID: room, PartyID: "p"}, "M_MISSING_PARAM"},
			"reject without room":   {a.CallReject, native.CallSignal{CallID: "c1", PartyID: "p"}, "M_MISSING_PARAM"},
		} {
			if _, err := tc.call(ctx, tc.sig); errCode(err) != tc.code {
				t.Errorf("%s = %v; want %s", name, err, tc.code)
			}
		}
	})
}
