package native

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/homeserver/pusher"
)

// The pushers ops are POST /pushers/set and GET /pushers: one core call each.

func opPushersGet(ctx context.Context, s *session, _ []byte) (any, error) {
	ps, err := s.srv.d.Pushers.List(ctx, s.userID)
	if err != nil {
		return nil, err
	}
	out := PushersReply{Pushers: make([]Pusher, 0, len(ps))}
	for _, p := range ps {
		np := Pusher{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang}
		json.Unmarshal(p.Data, &np.Data)
		out.Pushers = append(out.Pushers, np)
	}
	return out, nil
}

func opPushersSet(ctx context.Context, s *session, body []byte) (any, error) {
	// Through a map and JSON, so that every codec tells "kind": null (delete)
	// from no kind at all, as the HTTP body does.
	m, err := decode[map[string]any](s, body)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, mxerror.New(mxerror.BadJSON, "pushers.set data: %v", err)
	}
	var req pusher.Set
	if err := json.Unmarshal(raw, &req); err != nil {
		if e, ok := mxerror.As(err); ok {
			return nil, e
		}
		return nil, mxerror.New(mxerror.BadJSON, "pushers.set data: %v", err)
	}
	if err := s.srv.d.Pushers.Set(ctx, s.userID, s.deviceID, req); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// onNotified pushes each notification to its user's sessions on this node,
// with the room's unread counts, counted only for users with sessions here.
func (h *hub) onNotified(data []byte) {
	var n pusher.Notified
	if err := json.Unmarshal(data, &n); err != nil {
		slog.Warn("native: notified notice", "err", err)
		return
	}
	var mine []push.Notification
	subs := map[string][]*session{}
	h.mu.RLock()
	for _, nt := range n.Notifications {
		if _, ok := subs[nt.UserID]; !ok {
			subs[nt.UserID] = h.byUser.of(nt.UserID)
		}
		if len(subs[nt.UserID]) > 0 {
			mine = append(mine, nt)
		}
	}
	h.mu.RUnlock()
	if len(mine) == 0 {
		return
	}
	if err := h.srv.d.Pushers.FillUnread(context.Background(), mine); err != nil {
		slog.Warn("native: unread counts for notifications", "err", err)
	}
	for _, nt := range mine {
		p := NotificationPush{RoomID: nt.RoomID, EventID: nt.EventID, ThreadID: nt.ThreadID, TS: nt.TS, Highlight: nt.Highlight,
			Sound: pusher.Sound(nt.Actions), NotificationCount: nt.Unread.Notifications, HighlightCount: nt.Unread.Highlights}
		msg := Message[NotificationPush]{Op: "notification", Data: p}
		for _, s := range subs[nt.UserID] {
			s.sendPush(msg)
		}
	}
}
