package sdk

import (
	"context"
	"strings"

	"github.com/hongyan/hongyan/native"
)

// CallInvite rings the room with an SDP offer (m.call.invite).
func (c *Client) CallInvite(ctx context.Context, sig native.CallSignal) (native.Sent, error) {
	return c.callOp(ctx, "call_invite", sig)
}

// CallAnswer answers a call with an SDP answer (m.call.answer).
func (c *Client) CallAnswer(ctx context.Context, sig native.CallSignal) (native.Sent, error) {
	return c.callOp(ctx, "call_answer", sig)
}

// CallCandidates sends ICE candidates (m.call.candidates).
func (c *Client) CallCandidates(ctx context.Context, sig native.CallSignal) (native.Sent, error) {
	return c.callOp(ctx, "call_candidates", sig)
}

// CallHangup ends a call (m.call.hangup).
func (c *Client) CallHangup(ctx context.Context, sig native.CallSignal) (native.Sent, error) {
	return c.callOp(ctx, "call_hangup", sig)
}

// CallReject declines a call invite (m.call.reject).
func (c *Client) CallReject(ctx context.Context, sig native.CallSignal) (native.Sent, error) {
	return c.callOp(ctx, "call_reject", sig)
}

func (c *Client) callOp(ctx context.Context, op string, sig native.CallSignal) (native.Sent, error) {
	if sig.TxnID == "" {
		sig.TxnID = TxnID()
	}
	var out native.Sent
	err := c.Call(ctx, op, sig, &out)
	return out, err
}

// CallPush is a typed 1:1 call signal, decoded from an m.call.* room event:
// Kind is the event type without "m.call." (invite, answer, candidates,
// select_answer, negotiate, reject, hangup, sdp_stream_metadata_changed).
type CallPush struct {
	Kind   string
	Sender string
	native.CallSignal
}

// callPush decodes ev as a call signal, or nil when it is not one.
func callPush(roomID string, ev native.Event) *CallPush {
	kind, ok := strings.CutPrefix(ev.Type, "m.call.")
	if !ok || ev.StateKey != nil {
		return nil
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	p := &CallPush{Kind: kind, Sender: ev.Sender}
	c := ev.Content
	p.RoomID, p.CallID, p.PartyID, p.Reason, p.Invitee = roomID, str(c, "call_id"), str(c, "party_id"), str(c, "reason"), str(c, "invitee")
	if n, ok := c["lifetime"].(float64); ok {
		p.Lifetime = int64(n)
	}
	for _, k := range []string{"offer", "answer", "description"} {
		if d, ok := c[k].(map[string]any); ok {
			p.SDP = str(d, "sdp")
		}
	}
	if list, ok := c["candidates"].([]any); ok {
		for _, item := range list {
			m, _ := item.(map[string]any)
			cand := native.CallCandidate{Candidate: str(m, "candidate"), SDPMid: str(m, "sdpMid")}
			if n, ok := m["sdpMLineIndex"].(float64); ok {
				i := int(n)
				cand.SDPMLineIndex = &i
			}
			p.Candidates = append(p.Candidates, cand)
		}
	}
	return p
}
