package native_test

import (
	"context"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// socialOps are the friends and groups ops, each with a request a member would send.
func socialOps(group, user string) map[string]any {
	return map[string]any{
		"friend_request": native.FriendRequestOp{UserID: user}, "friend_requests": struct{}{},
		"friend_accept": native.UserRef{UserID: user}, "friend_decline": native.UserRef{UserID: user},
		"friend_cancel": native.UserRef{UserID: user}, "friend_remove": native.UserRef{UserID: user},
		"friends": struct{}{}, "block": native.UserRef{UserID: user}, "unblock": native.UserRef{UserID: user},
		"blocked": struct{}{}, "group_create": native.GroupCreate{Name: "x"}, "groups": struct{}{},
		"group_members": native.RoomRef{RoomID: group}, "group_join": native.RoomRef{RoomID: group},
		"group_leave": native.RoomRef{RoomID: group}, "group_dissolve": native.RoomRef{RoomID: group},
		"group_invite": native.GroupUser{RoomID: group, UserID: user}, "group_kick": native.GroupUser{RoomID: group, UserID: user},
		"group_transfer": native.GroupUser{RoomID: group, UserID: user},
		"group_update":   native.GroupUpdate{RoomID: group, Name: new(string)},
		"group_mute":     native.GroupMute{RoomID: group, Muted: true},
	}
}

// TestSocialOpsRefuseOutsiders: before auth every friends and groups op is
// M_MISSING_TOKEN; after it, a user outside a group is refused every group op on
// it, and cannot answer or withdraw requests that are not theirs.
func TestSocialOpsRefuseOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		var created map[string]string
		alice.MustDo("POST", "/_matrix/client/unstable/im.hongyan/groups", map[string]any{"name": "Private", "members": []string{bob.UserID}}, &created)
		group := created["room_id"]
		alice.MustDo("POST", "/_matrix/client/unstable/im.hongyan/friends/requests", map[string]string{"user_id": bob.UserID}, nil)

		raw := rawDial(t, srv)
		raw.op("1", "hello", native.Hello{Version: native.ProtocolVersion})
		expect[native.HelloReply](raw, "reply")
		for op, req := range socialOps(group, alice.UserID) {
			raw.op(op, op, req)
			if e := expect[native.Error](raw, "error"); e.Code != "M_MISSING_TOKEN" {
				t.Errorf("%s before auth = %s; want M_MISSING_TOKEN", op, e.Code)
			}
		}

		eve := dial(t, srv, sdk.Options{Token: srv.Register(t, "eve", "pw").Token})
		for _, op := range []string{"group_members", "group_join", "group_leave", "group_dissolve", "group_invite", "group_kick", "group_transfer", "group_update", "group_mute"} {
			if err := eve.Call(ctx, op, socialOps(group, bob.UserID)[op], nil); errCode(err) != "M_FORBIDDEN" {
				t.Errorf("eve's %s on alice's group = %v; want M_FORBIDDEN", op, err)
			}
		}
		for _, op := range []string{"friend_accept", "friend_decline", "friend_cancel", "friend_remove"} {
			if err := eve.Call(ctx, op, native.UserRef{UserID: alice.UserID}, nil); errCode(err) != "M_NOT_FOUND" {
				t.Errorf("eve's %s of alice = %v; want M_NOT_FOUND", op, err)
			}
		}
		if rs, err := eve.FriendRequests(ctx); err != nil || len(rs.Incoming)+len(rs.Outgoing) != 0 {
			t.Errorf("eve's requests = %+v, %v; want none", rs, err)
		}
		// Bad input is a typed error, never a crash.
		for op, req := range map[string]any{
			"group_members":  native.RoomRef{},
			"group_kick":     native.GroupUser{RoomID: group},
			"friend_accept":  native.UserRef{},
			"block":          native.UserRef{UserID: "nobody"},
			"group_update":   native.GroupUpdate{RoomID: "nope"},
			"friend_request": map[string]any{"user_id": 5},
		} {
			if err := eve.Call(ctx, op, req, nil); errCode(err) == "" || errCode(err) == "M_UNKNOWN" {
				t.Errorf("%s(%v) = %v; want a typed error", op, req, err)
			}
		}
	})
}
