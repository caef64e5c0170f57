package calls

import (
	"encoding/json"
	"fmt"
)

// Event types of 1:1 VoIP calls (spec: "Voice over IP").
const (
	Invite                   = "m.call.invite"
	Answer                   = "m.call.answer"
	Candidates               = "m.call.candidates"
	SelectAnswer             = "m.call.select_answer"
	Negotiate                = "m.call.negotiate"
	Reject                   = "m.call.reject"
	Hangup                   = "m.call.hangup"
	SDPStreamMetadataChanged = "m.call.sdp_stream_metadata_changed"
)

// IsCallEvent reports whether eventType is a 1:1 call event ValidateEvent checks.
func IsCallEvent(eventType string) bool {
	switch eventType {
	case Invite, Answer, Candidates, SelectAnswer, Negotiate, Reject, Hangup, SDPStreamMetadataChanged:
		return true
	}
	return false
}

// callContent is the union of the fields ValidateEvent looks at.
type callContent struct {
	CallID           *string          `json:"call_id"`
	PartyID          *string          `json:"party_id"`
	Version          json.RawMessage  `json:"version"`
	Lifetime         *int64           `json:"lifetime"`
	Offer            *sdp             `json:"offer"`
	Answer           *sdp             `json:"answer"`
	Description      *sdp             `json:"description"`
	Candidates       []map[string]any `json:"candidates"`
	SelectedPartyID  *string          `json:"selected_party_id"`
	Reason           json.RawMessage  `json:"reason"`
	StreamMetadata   json.RawMessage  `json:"sdp_stream_metadata"`
	candidatesAbsent bool
}

type sdp struct {
	Type *string `json:"type"`
	SDP  *string `json:"sdp"`
}

// ValidateEvent checks the content of a cleartext m.call.* message event
// against the spec (version 0 and 1): every event needs call_id and version,
// version 1 also party_id; each type its own fields. The returned error's text
// says what is wrong; callers turn it into M_BAD_JSON. Events of other types
// pass. (Encrypted calls travel as m.room.encrypted, which no server can read.)
func ValidateEvent(eventType string, content json.RawMessage) error {
	if !IsCallEvent(eventType) {
		return nil
	}
	var c callContent
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(content, &raw); err != nil {
		return fmt.Errorf("%s content must be a JSON object", eventType)
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return fmt.Errorf("%s: a field has the wrong type: %v", eventType, err)
	}
	_, c.candidatesAbsent = raw["candidates"]
	c.candidatesAbsent = !c.candidatesAbsent
	if c.CallID == nil || *c.CallID == "" {
		return fmt.Errorf("%s needs a call_id", eventType)
	}
	v1, err := version(c.Version)
	if err != nil {
		return fmt.Errorf("%s: %w", eventType, err)
	}
	if v1 && (c.PartyID == nil || *c.PartyID == "") {
		return fmt.Errorf("%s version 1 needs a party_id", eventType)
	}
	switch eventType {
	case Invite:
		if err := c.Offer.check("offer", "offer"); err != nil {
			return fmt.Errorf("%s: %w", eventType, err)
		}
		if c.Lifetime == nil || *c.Lifetime <= 0 {
			return fmt.Errorf("%s needs a positive lifetime (milliseconds)", eventType)
		}
	case Answer:
		if err := c.Answer.check("answer", "answer"); err != nil {
			return fmt.Errorf("%s: %w", eventType, err)
		}
	case Negotiate:
		if err := c.Description.check("description", "offer", "answer"); err != nil {
			return fmt.Errorf("%s: %w", eventType, err)
		}
		if c.Lifetime == nil || *c.Lifetime <= 0 {
			return fmt.Errorf("%s needs a positive lifetime (milliseconds)", eventType)
		}
	case Candidates:
		if c.candidatesAbsent || c.Candidates == nil {
			return fmt.Errorf("%s needs a candidates list", eventType)
		}
		for i, cand := range c.Candidates {
			if s, ok := cand["candidate"].(string); !ok {
				return fmt.Errorf("%s: candidates[%d] needs a candidate string (empty marks the end)", eventType, i)
			} else if s != "" && cand["sdpMid"] == nil && cand["sdpMLineIndex"] == nil {
				return fmt.Errorf("%s: candidates[%d] needs sdpMid or sdpMLineIndex", eventType, i)
			}
		}
	case SelectAnswer:
		if c.SelectedPartyID == nil || *c.SelectedPartyID == "" {
			return fmt.Errorf("%s needs a selected_party_id", eventType)
		}
	case Hangup, Reject:
		if len(c.Reason) > 0 && string(c.Reason) != "null" {
			var s string
			if json.Unmarshal(c.Reason, &s) != nil {
				return fmt.Errorf("%s: reason must be a string", eventType)
			}
		}
	case SDPStreamMetadataChanged:
		var m map[string]json.RawMessage
		if json.Unmarshal(c.StreamMetadata, &m) != nil || m == nil {
			return fmt.Errorf("%s needs an sdp_stream_metadata object", eventType)
		}
	}
	return nil
}

// version parses the call version: the integer 0, or a string ("1" and any
// later version, which the spec says to treat as 1's superset). It reports
// whether the call is version 1 or later.
func version(raw json.RawMessage) (bool, error) {
	if len(raw) == 0 {
		return false, fmt.Errorf("version is required")
	}
	var n json.Number
	if raw[0] != '"' && json.Unmarshal(raw, &n) == nil {
		if n.String() != "0" {
			return false, fmt.Errorf("a numeric version must be 0")
		}
		return false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || s == "" {
		return false, fmt.Errorf("version must be 0 or a string")
	}
	return true, nil
}

func (d *sdp) check(field string, types ...string) error {
	if d == nil || d.Type == nil || d.SDP == nil || *d.SDP == "" {
		return fmt.Errorf("%s needs type and sdp", field)
	}
	for _, t := range types {
		if *d.Type == t {
			return nil
		}
	}
	return fmt.Errorf("%s.type must be %v", field, types)
}
