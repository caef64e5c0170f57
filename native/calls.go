package native

import (
	"context"

	"github.com/hongyan/hongyan/homeserver/calls"
	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// CallSignal is the data of the 1:1 call ops (call_invite, call_answer,
// call_candidates, call_hangup, call_reject). Each op sends the matching
// m.call.* event (version "1") into RoomID through the same core call as a
// Matrix client's /send, so the same validation applies and Matrix clients in
// the room see an ordinary call.
type CallSignal struct {
	RoomID  string `json:"room_id"`
	TxnID   string `json:"txn_id,omitempty"`
	CallID  string `json:"call_id"`
	PartyID string `json:"party_id"`
	// SDP is the offer (call_invite) or the answer (call_answer).
	SDP string `json:"sdp,omitempty"`
	// Lifetime is how long an invite rings, in milliseconds. Default 60000.
	Lifetime int64 `json:"lifetime,omitempty"`
	// Invitee optionally names the one user a call_invite rings.
	Invitee    string          `json:"invitee,omitempty"`
	Candidates []CallCandidate `json:"candidates,omitempty"`
	// Reason is a call_hangup's reason (user_hangup, ice_failed, …).
	Reason string `json:"reason,omitempty"`
}

// CallCandidate is one ICE candidate; an empty Candidate ends the list.
type CallCandidate struct {
	Candidate     string `json:"candidate"`
	SDPMid        string `json:"sdpMid,omitempty"`
	SDPMLineIndex *int   `json:"sdpMLineIndex,omitempty"`
}

// callOps are registered with the others in ops.go's init.
var callOps = map[string]op{
	"call_invite":     {true, callOp(calls.Invite)},
	"call_answer":     {true, callOp(calls.Answer)},
	"call_candidates": {true, callOp(calls.Candidates)},
	"call_hangup":     {true, callOp(calls.Hangup)},
	"call_reject":     {true, callOp(calls.Reject)},
}

func callOp(eventType string) func(ctx context.Context, s *session, body []byte) (any, error) {
	return func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[CallSignal](s, body)
		if err != nil {
			return nil, err
		}
		if err := roomArg(req.RoomID); err != nil {
			return nil, err
		}
		if req.CallID == "" || req.PartyID == "" {
			return nil, mxerror.New(mxerror.MissingParam, "call_id and party_id are required")
		}
		content := map[string]any{"call_id": req.CallID, "party_id": req.PartyID, "version": "1"}
		switch eventType {
		case calls.Invite:
			lifetime := req.Lifetime
			if lifetime <= 0 {
				lifetime = 60000
			}
			content["offer"] = map[string]any{"type": "offer", "sdp": req.SDP}
			content["lifetime"] = lifetime
			if req.Invitee != "" {
				content["invitee"] = req.Invitee
			}
		case calls.Answer:
			content["answer"] = map[string]any{"type": "answer", "sdp": req.SDP}
		case calls.Candidates:
			cands := make([]any, 0, len(req.Candidates))
			for _, c := range req.Candidates {
				m := map[string]any{"candidate": c.Candidate}
				if c.SDPMid != "" {
					m["sdpMid"] = c.SDPMid
				}
				if c.SDPMLineIndex != nil {
					m["sdpMLineIndex"] = *c.SDPMLineIndex
				}
				cands = append(cands, m)
			}
			content["candidates"] = cands
		case calls.Hangup:
			if req.Reason != "" {
				content["reason"] = req.Reason
			}
		}
		return s.sendEvent(ctx, req.RoomID, eventType, content, req.TxnID)
	}
}
