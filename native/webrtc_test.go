package native_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// loopbackPeer is a pion/webrtc peer that gathers only relay candidates from
// the TURN server at turnAddr and uses no network but loopback (no mDNS).
func loopbackPeer(t *testing.T, turnAddr, username, password string) *webrtc.PeerConnection {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{
		ICEServers:         []webrtc.ICEServer{{URLs: []string{"turn:" + turnAddr + "?transport=udp"}, Username: username, Credential: password}},
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// gathered sets desc as the local description and returns it with every
// relay candidate in it (non-trickle), plus the candidates on their own.
func gathered(t *testing.T, pc *webrtc.PeerConnection, desc webrtc.SessionDescription) (string, []native.CallCandidate) {
	t.Helper()
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ICE gathering did not complete")
	}
	sdp := pc.LocalDescription().SDP
	var cands []native.CallCandidate
	for _, line := range strings.Split(sdp, "\r\n") {
		if strings.HasPrefix(line, "a=candidate:") {
			if !strings.Contains(line, "typ relay") {
				t.Fatalf("non-relay candidate gathered: %s", line)
			}
			idx := 0
			cands = append(cands, native.CallCandidate{Candidate: strings.TrimPrefix(line, "a="), SDPMLineIndex: &idx})
		}
	}
	if len(cands) == 0 {
		t.Fatal("no relay candidate: the TURN allocation failed")
	}
	return sdp, cands
}

// TestWebRTCCallThroughEmbeddedTURN: a Matrix client (HTTP, /sync) calls a
// native client (native/sdk) in a DM. Both are real pion/webrtc peers limited
// to relay candidates from the embedded TURN server, with credentials from
// /voip/turnServer. They exchange a data channel message each way, then the
// native side hangs up and both see the hangup.
func TestWebRTCCallThroughEmbeddedTURN(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		turnSrv, err := srv.Calls.StartTURN(ctx, srv.Config, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer turnSrv.Close()
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID}}, &created)
		room := created["room_id"]
		bob.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		b := dial(t, srv, sdk.Options{Token: bob.Token})
		since := waitCall(t, alice, room, "", "m.room.member") // alice's sync position before the call

		type creds struct{ Username, Password string }
		var ac, bc creds
		alice.MustDo("GET", "/_matrix/client/v3/voip/turnServer", nil, &ac)
		bob.MustDo("GET", "/_matrix/client/v3/voip/turnServer", nil, &bc)
		apc := loopbackPeer(t, turnSrv.Addr().String(), ac.Username, ac.Password)
		bpc := loopbackPeer(t, turnSrv.Addr().String(), bc.Username, bc.Password)

		fromBob, fromAlice := make(chan string, 1), make(chan string, 1)
		dc, err := apc.CreateDataChannel("chat", nil)
		if err != nil {
			t.Fatal(err)
		}
		dc.OnOpen(func() { _ = dc.SendText("hello from matrix") })
		dc.OnMessage(func(m webrtc.DataChannelMessage) { fromBob <- string(m.Data) })
		bpc.OnDataChannel(func(d *webrtc.DataChannel) {
			d.OnMessage(func(m webrtc.DataChannelMessage) {
				fromAlice <- string(m.Data)
				_ = d.SendText("hello from native")
			})
		})

		offer, err := apc.CreateOffer(nil)
		if err != nil {
			t.Fatal(err)
		}
		offerSDP, aCands := gathered(t, apc, offer)
		base := map[string]any{"call_id": "webrtc1", "party_id": "alice-dev", "version": "1"}
		with := func(k string, v any) map[string]any {
			m := map[string]any{k: v}
			for kk, vv := range base {
				m[kk] = vv
			}
			return m
		}
		inv := with("offer", map[string]any{"type": "offer", "sdp": offerSDP})
		inv["lifetime"] = 60000
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.call.invite/w1", inv, nil)
		var candList []any
		for _, c := range aCands {
			candList = append(candList, map[string]any{"candidate": c.Candidate, "sdpMLineIndex": 0})
		}
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.call.candidates/w2", with("candidates", candList), nil)

		invite := callPushOf(t, b, "invite")
		if err := bpc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: invite.SDP}); err != nil {
			t.Fatal(err)
		}
		for _, c := range callPushOf(t, b, "candidates").Candidates {
			idx := uint16(0)
			if err := bpc.AddICECandidate(webrtc.ICECandidateInit{Candidate: c.Candidate, SDPMLineIndex: &idx}); err != nil {
				t.Fatal(err)
			}
		}
		answer, err := bpc.CreateAnswer(nil)
		if err != nil {
			t.Fatal(err)
		}
		answerSDP, bCands := gathered(t, bpc, answer)
		sig := native.CallSignal{RoomID: room, CallID: "webrtc1", PartyID: "bob-dev"}
		sig.SDP = answerSDP
		if _, err := b.CallAnswer(ctx, sig); err != nil {
			t.Fatal(err)
		}
		sig.SDP, sig.Candidates = "", bCands
		if _, err := b.CallCandidates(ctx, sig); err != nil {
			t.Fatal(err)
		}

		// Alice reads the answer and Bob's candidates through /sync.
		got := map[string]map[string]any{}
		deadline := time.Now().Add(10 * time.Second)
		for (got["m.call.answer"] == nil || got["m.call.candidates"] == nil) && time.Now().Before(deadline) {
			var s syncEvents
			alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=2000&since="+since, nil, &s)
			since = s.NextBatch
			for _, e := range s.Rooms.Join[room].Timeline.Events {
				if e.Sender == bob.UserID {
					got[e.Type] = e.Content
				}
			}
		}
		ans, _ := got["m.call.answer"]["answer"].(map[string]any)
		if ans == nil {
			t.Fatal("alice never saw bob's m.call.answer")
		}
		if err := apc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans["sdp"].(string)}); err != nil {
			t.Fatal(err)
		}
		cands, _ := got["m.call.candidates"]["candidates"].([]any)
		for _, c := range cands {
			idx := uint16(0)
			if err := apc.AddICECandidate(webrtc.ICECandidateInit{Candidate: c.(map[string]any)["candidate"].(string), SDPMLineIndex: &idx}); err != nil {
				t.Fatal(err)
			}
		}

		for _, want := range []struct {
			ch   chan string
			text string
		}{{fromAlice, "hello from matrix"}, {fromBob, "hello from native"}} {
			select {
			case m := <-want.ch:
				if m != want.text {
					t.Fatalf("got %q, want %q", m, want.text)
				}
			case <-ctx.Done():
				t.Fatalf("%q never arrived over the relayed data channel", want.text)
			}
		}
		if pair, err := bpc.SCTP().Transport().ICETransport().GetSelectedCandidatePair(); err != nil || pair == nil ||
			pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
			t.Fatalf("selected pair %v, %v; want relay on both ends", pair, err)
		}

		if _, err := b.CallHangup(ctx, native.CallSignal{RoomID: room, CallID: "webrtc1", PartyID: "bob-dev", Reason: "user_hangup"}); err != nil {
			t.Fatal(err)
		}
		if p := callPushOf(t, b, "hangup"); p.Reason != "user_hangup" {
			t.Fatalf("bob's hangup push %+v", p)
		}
		waitCall(t, alice, room, since, "m.call.hangup")
	})
}

type syncEvents struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Type    string         `json:"type"`
					Sender  string         `json:"sender"`
					Content map[string]any `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}
