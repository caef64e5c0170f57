package native

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/social"
)

// The friends and groups ops: each decodes its request and calls one
// homeserver/social function, the one the IM HTTP API calls.

// recode turns a core value into the wire type of the same JSON shape.
func recode[T any](v any, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out T
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *session) social() (*social.Service, error) {
	if s.srv.d.Social == nil {
		return nil, mxerror.New(mxerror.Unrecognized, "friends and groups are not available")
	}
	return s.srv.d.Social, nil
}

// userOp decodes a {user_id} request and calls fn with it.
func userOp(fn func(ctx context.Context, so *social.Service, me, other string) (any, error)) func(context.Context, *session, []byte) (any, error) {
	return func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[UserRef](s, body)
		if err != nil {
			return nil, err
		}
		if req.UserID == "" {
			return nil, mxerror.New(mxerror.MissingParam, "user_id is required")
		}
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		return fn(ctx, so, s.userID, req.UserID)
	}
}

// roomOp decodes a {room_id} request and calls fn with it.
func roomOp(fn func(ctx context.Context, so *social.Service, me, roomID string) (any, error)) func(context.Context, *session, []byte) (any, error) {
	return func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[RoomRef](s, body)
		if err != nil {
			return nil, err
		}
		if err := roomArg(req.RoomID); err != nil {
			return nil, err
		}
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		return fn(ctx, so, s.userID, req.RoomID)
	}
}

// groupUserOp decodes a {room_id, user_id, reason} request and calls fn with it.
func groupUserOp(fn func(ctx context.Context, so *social.Service, me string, req GroupUser) error) func(context.Context, *session, []byte) (any, error) {
	return func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[GroupUser](s, body)
		if err != nil {
			return nil, err
		}
		if err := roomArg(req.RoomID); err != nil {
			return nil, err
		}
		if req.UserID == "" {
			return nil, mxerror.New(mxerror.MissingParam, "user_id is required")
		}
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		return struct{}{}, fn(ctx, so, s.userID, req)
	}
}

func done(err error) (any, error) { return struct{}{}, err }

var socialOps = map[string]op{
	"friend_request": {true, func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[FriendRequestOp](s, body)
		if err != nil {
			return nil, err
		}
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		return recode[FriendRequest](so.RequestFriend(ctx, s.userID, req.UserID, req.Message))
	}},
	"friend_requests": {true, func(ctx context.Context, s *session, _ []byte) (any, error) {
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		return recode[FriendRequests](so.Requests(ctx, s.userID))
	}},
	"friend_accept": {true, userOp(func(ctx context.Context, so *social.Service, me, other string) (any, error) {
		roomID, err := so.Accept(ctx, me, other)
		return RoomRef{RoomID: roomID}, err
	})},
	"friend_decline": {true, userOp(func(ctx context.Context, so *social.Service, me, other string) (any, error) {
		return done(so.Decline(ctx, me, other))
	})},
	"friend_cancel": {true, userOp(func(ctx context.Context, so *social.Service, me, other string) (any, error) {
		return done(so.Cancel(ctx, me, other))
	})},
	"friend_remove": {true, userOp(func(ctx context.Context, so *social.Service, me, other string) (any, error) {
		return done(so.RemoveFriend(ctx, me, other))
	})},
	"friends": {true, func(ctx context.Context, s *session, _ []byte) (any, error) {
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		fs, err := so.Friends(ctx, s.userID)
		return recode[FriendsReply](map[string]any{"friends": fs}, err)
	}},
	"block": {true, userOp(func(ctx context.Context, so *social.Service, me, other string) (any, error) {
		return done(so.Block(ctx, me, other))
	})},
	"unblock": {true, userOp(func(ctx context.Context, so *social.Service, me, other string) (any, error) {
		return done(so.Unblock(ctx, me, other))
	})},
	"blocked": {true, func(ctx context.Context, s *session, _ []byte) (any, error) {
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		list, err := so.Blocked(ctx, s.userID)
		return BlockedReply{Blocked: list}, err
	}},
	"group_create": {true, func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[GroupCreate](s, body)
		if err != nil {
			return nil, err
		}
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		roomID, err := so.CreateGroup(ctx, s.userID, req.Name, req.Members)
		if err != nil {
			return nil, err
		}
		return RoomRef{RoomID: roomID}, nil
	}},
	"groups": {true, func(ctx context.Context, s *session, _ []byte) (any, error) {
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		gs, err := so.Groups(ctx, s.userID)
		return recode[GroupsReply](map[string]any{"groups": gs}, err)
	}},
	"group_members": {true, roomOp(func(ctx context.Context, so *social.Service, me, roomID string) (any, error) {
		ms, err := so.GroupMembers(ctx, me, roomID)
		return recode[GroupMembersReply](map[string]any{"members": ms}, err)
	})},
	"group_join": {true, roomOp(func(ctx context.Context, so *social.Service, me, roomID string) (any, error) {
		return done(so.JoinGroup(ctx, me, roomID))
	})},
	"group_leave": {true, roomOp(func(ctx context.Context, so *social.Service, me, roomID string) (any, error) {
		return done(so.LeaveGroup(ctx, me, roomID))
	})},
	"group_dissolve": {true, roomOp(func(ctx context.Context, so *social.Service, me, roomID string) (any, error) {
		return done(so.DissolveGroup(ctx, me, roomID))
	})},
	"group_invite": {true, groupUserOp(func(ctx context.Context, so *social.Service, me string, req GroupUser) error {
		return so.InviteToGroup(ctx, me, req.RoomID, req.UserID)
	})},
	"group_kick": {true, groupUserOp(func(ctx context.Context, so *social.Service, me string, req GroupUser) error {
		return so.KickFromGroup(ctx, me, req.RoomID, req.UserID, req.Reason)
	})},
	"group_transfer": {true, groupUserOp(func(ctx context.Context, so *social.Service, me string, req GroupUser) error {
		return so.TransferGroup(ctx, me, req.RoomID, req.UserID)
	})},
	"group_update": {true, func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[GroupUpdate](s, body)
		if err != nil {
			return nil, err
		}
		if err := roomArg(req.RoomID); err != nil {
			return nil, err
		}
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		return done(so.UpdateGroup(ctx, s.userID, req.RoomID, social.GroupUpdate{Name: req.Name, AvatarURL: req.AvatarURL, Announcement: req.Announcement}))
	}},
	"group_mute": {true, func(ctx context.Context, s *session, body []byte) (any, error) {
		req, err := decode[GroupMute](s, body)
		if err != nil {
			return nil, err
		}
		if err := roomArg(req.RoomID); err != nil {
			return nil, err
		}
		so, err := s.social()
		if err != nil {
			return nil, err
		}
		return done(so.MuteGroup(ctx, s.userID, req.RoomID, req.Muted))
	}},
}

// onSocial turns a social.Notice into a typed push to the user's started sessions.
func (h *hub) onSocial(data []byte) {
	var n social.Notice
	if json.Unmarshal(data, &n) != nil {
		return
	}
	p := SocialPush{RoomID: n.RoomID, From: n.From, Message: n.Message}
	var op string
	switch n.Kind {
	case social.KindFriendRequest:
		op = "friend_request"
	case social.KindFriendAccepted, social.KindFriendDeclined, social.KindFriendCancelled:
		op, p.Answer = "friend_answer", strings.TrimPrefix(n.Kind, "friend_")
	case social.KindFriendRemoved:
		op = "friend_removed"
	case social.KindGroupInvite, social.KindGroupRemoved, social.KindGroupUpdated, social.KindGroupDissolved:
		op, p.Change = "group_change", strings.TrimPrefix(n.Kind, "group_")
	default:
		return
	}
	h.mu.RLock()
	sessions := h.byUser.of(n.UserID)
	h.mu.RUnlock()
	push := Message[SocialPush]{Op: op, Data: p}
	for _, s := range sessions {
		s.sendPush(push)
	}
}
