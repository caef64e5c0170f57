package rooms

import (
	"context"
	"encoding/json"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// checkReplacement enforces the spec's validity rules for an edit (an event whose
// m.relates_to has rel_type m.replace) sent by a local user: the original must be
// visible to the sender, sent by the same user, of the same type, not a state event,
// and not itself an edit. Clients would ignore an invalid edit anyway; refusing it
// here with M_FORBIDDEN gives every front-end the same answer.
func (s *Service) checkReplacement(ctx context.Context, roomID string, p Proto) error {
	if p.StateKey != nil || len(p.Content) == 0 {
		return nil
	}
	var c struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(p.Content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.RelType != "m.replace" {
		return nil
	}
	if c.RelatesTo.EventID == "" {
		return mxerror.New(mxerror.InvalidParam, "an edit must name the event it replaces")
	}
	orig, err := s.Event(ctx, roomID, p.Sender, c.RelatesTo.EventID)
	if err != nil {
		return err
	}
	if orig.Sender != p.Sender || orig.Type != p.Type || orig.StateKey != nil {
		return mxerror.New(mxerror.Forbidden, "only your own messages can be edited")
	}
	var oc struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(orig.Content, &oc) == nil && oc.RelatesTo != nil && oc.RelatesTo.RelType == "m.replace" {
		return mxerror.New(mxerror.Forbidden, "an edit cannot itself be edited; edit the original")
	}
	return nil
}
