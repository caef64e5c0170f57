package pusher

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/push"
)

// The bodies follow the Push Gateway API (/_matrix/push/v1/notify) as Synapse
// sends them, which is what Sygnal and the apps behind it read: "id" repeats
// event_id for older gateways; counts.unread is the badge.

// device is the notification's devices entry for p: its data without url (the
// gateway's own address is of no use to the app).
func device(p Pusher, tweaks map[string]any) map[string]any {
	var d map[string]any
	json.Unmarshal(p.Data, &d)
	delete(d, "url")
	if d == nil {
		d = map[string]any{}
	}
	dev := map[string]any{"app_id": p.AppID, "pushkey": p.PushKey, "pushkey_ts": p.PushKeyTS / 1000, "data": d}
	if tweaks != nil {
		dev["tweaks"] = tweaks
	}
	return dev
}

// tweaks collects the set_tweak actions of a notification.
func tweaks(actions []json.RawMessage) map[string]any {
	out := map[string]any{}
	for _, a := range actions {
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak == "" {
			continue
		}
		var v any = true // highlight without a value means true
		if len(t.Value) > 0 {
			json.Unmarshal(t.Value, &v)
		}
		out[t.SetTweak] = v
	}
	return out
}

// badgeBody is a counts-only push: the app updates its badge and shows nothing.
func badgeBody(p Pusher, badge int) map[string]any {
	return map[string]any{"notification": map[string]any{
		"id": "", "type": nil, "sender": "",
		"counts":  map[string]any{"unread": badge},
		"devices": []any{device(p, nil)},
	}}
}

// eventBody is the push of one notification to p: the event, read through the
// visibility filter for p's user (a hidden event is a NotFound error), in full or,
// for event_id_only pushers, its IDs and counts alone.
func (s *Service) eventBody(ctx context.Context, p Pusher, n push.Notification, badge int) (map[string]any, error) {
	ev, err := s.d.Rooms.Event(ctx, n.RoomID, p.userID, n.EventID)
	if err != nil {
		return nil, err
	}
	tw := tweaks(n.Actions)
	prio := "low"
	if ev.Type == "m.room.encrypted" || truthy(tw["highlight"]) || tw["sound"] != nil {
		prio = "high"
	}
	note := map[string]any{
		"event_id": ev.EventID,
		"room_id":  ev.RoomID,
		"prio":     prio,
		"counts":   map[string]any{"unread": badge},
		"devices":  []any{device(p, tw)},
	}
	if p.eventIDs {
		return map[string]any{"notification": note}, nil
	}
	note["id"] = ev.EventID
	note["type"] = ev.Type
	note["sender"] = ev.Sender
	var content map[string]any
	if json.Unmarshal(ev.Content, &content) == nil && len(content) > 0 {
		note["content"] = content
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		note["membership"] = content["membership"]
		note["user_is_target"] = *ev.StateKey == p.userID
	}
	rc, err := s.roomContext(ctx, p.userID, ev.RoomID, ev.Sender)
	if err != nil {
		return nil, err
	}
	if rc.name != "" {
		note["room_name"] = rc.name
	}
	if rc.alias != "" {
		note["room_alias"] = rc.alias
	}
	if rc.senderName != "" {
		note["sender_display_name"] = rc.senderName
	}
	return map[string]any{"notification": note}, nil
}

func truthy(v any) bool { b, ok := v.(bool); return ok && b }

// roomCtx is what a push says about the room beside the event.
type roomCtx struct {
	name, alias, senderName string
}

// roomContext reads the room's name, canonical alias and the sender's display
// name as userID may see them: from the current state for a member, from the
// invite's stripped state for an invitee. The room name falls back to the
// canonical alias, as Synapse's pushes do.
func (s *Service) roomContext(ctx context.Context, userID, roomID, sender string) (roomCtx, error) {
	var rc roomCtx
	m, err := s.d.Rooms.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return rc, err
	}
	if m == "invite" {
		st, err := s.d.Rooms.StrippedState(ctx, roomID, userID)
		if err != nil {
			return rc, err
		}
		for _, e := range st {
			raw, _ := json.Marshal(e)
			var ev struct {
				Type     string `json:"type"`
				StateKey string `json:"state_key"`
				Content  struct {
					Name        string `json:"name"`
					Alias       string `json:"alias"`
					Displayname string `json:"displayname"`
				} `json:"content"`
			}
			json.Unmarshal(raw, &ev)
			switch {
			case ev.Type == "m.room.name":
				rc.name = ev.Content.Name
			case ev.Type == "m.room.canonical_alias":
				rc.alias = ev.Content.Alias
			case ev.Type == "m.room.member" && ev.StateKey == sender:
				rc.senderName = ev.Content.Displayname
			}
		}
	} else {
		var err error
		if rc.name, err = s.stateField(ctx, roomID, userID, "m.room.name", "", "name"); err != nil {
			return rc, err
		}
		if rc.alias, err = s.stateField(ctx, roomID, userID, "m.room.canonical_alias", "", "alias"); err != nil {
			return rc, err
		}
		if rc.senderName, err = s.stateField(ctx, roomID, userID, "m.room.member", sender, "displayname"); err != nil {
			return rc, err
		}
	}
	if rc.name == "" {
		rc.name = rc.alias
	}
	return rc, nil
}

// stateField reads one string of a current state event's content as userID may
// see it; "" when there is no such event, or userID may not read the state.
func (s *Service) stateField(ctx context.Context, roomID, userID, typ, stateKey, field string) (string, error) {
	ev, err := s.d.Rooms.StateEvent(ctx, roomID, userID, typ, stateKey)
	if err != nil {
		var e *mxerror.Error
		if errors.As(err, &e) {
			return "", nil
		}
		return "", err
	}
	var c map[string]any
	json.Unmarshal(ev.Content, &c)
	v, _ := c[field].(string)
	return v, nil
}

// Sound is the sound tweak of a notification's actions ("" if none): whether,
// and with what, the device should ring.
func Sound(actions []json.RawMessage) string {
	s, _ := tweaks(actions)["sound"].(string)
	return s
}
