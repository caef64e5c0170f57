package calls_test

import (
	"encoding/json"
	"testing"

	"github.com/hongyan/hongyan/homeserver/calls"
)

func TestValidateEvent(t *testing.T) {
	const base = `"call_id":"c1","party_id":"p1","version":"1"`
	tests := []struct {
		typ, content string
		ok           bool
	}{
		{calls.Invite, `{` + base + `,"lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`, true},
		{calls.Invite, `{"call_id":"c1","version":0,"lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`, true},
		{calls.Invite, `{` + base + `,"offer":{"type":"offer","sdp":"v=0"}}`, false},                   // no lifetime
		{calls.Invite, `{` + base + `,"lifetime":60000,"offer":{"type":"answer","sdp":"v=0"}}`, false}, // wrong type
		{calls.Invite, `{"call_id":"c1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`, false},
		{calls.Invite, `{"party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`, false},
		{calls.Invite, `{"call_id":"c1","party_id":"p1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`, false},
		{calls.Invite, `{"call_id":"c1","party_id":"p1","version":2,"lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`, false},
		{calls.Invite, `{"call_id":5,"party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`, false},
		{calls.Answer, `{` + base + `,"answer":{"type":"answer","sdp":"v=0"}}`, true},
		{calls.Answer, `{` + base + `}`, false},
		{calls.Candidates, `{` + base + `,"candidates":[{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ relay","sdpMid":"0"},{"candidate":""}]}`, true},
		{calls.Candidates, `{` + base + `}`, false},
		{calls.Candidates, `{` + base + `,"candidates":[{"sdpMid":"0"}]}`, false},
		{calls.SelectAnswer, `{` + base + `,"selected_party_id":"p2"}`, true},
		{calls.SelectAnswer, `{` + base + `}`, false},
		{calls.Negotiate, `{` + base + `,"lifetime":1000,"description":{"type":"offer","sdp":"v=0"}}`, true},
		{calls.Negotiate, `{` + base + `,"description":{"type":"offer","sdp":"v=0"}}`, false},
		{calls.Reject, `{` + base + `}`, true},
		{calls.Hangup, `{` + base + `,"reason":"user_hangup"}`, true},
		{calls.Hangup, `{` + base + `,"reason":7}`, false},
		{calls.SDPStreamMetadataChanged, `{` + base + `,"sdp_stream_metadata":{"s1":{"purpose":"m.usermedia"}}}`, true},
		{calls.SDPStreamMetadataChanged, `{` + base + `}`, false},
		{"m.room.message", `{}`, true},
	}
	for i, tt := range tests {
		err := calls.ValidateEvent(tt.typ, json.RawMessage(tt.content))
		if (err == nil) != tt.ok {
			t.Errorf("%d %s %s: err %v, want ok=%v", i, tt.typ, tt.content, err, tt.ok)
		}
	}
}
