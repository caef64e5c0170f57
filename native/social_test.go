package native_test

import (
	"context"
	"slices"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// socialPush waits for the next typed social push of kind matching match.
func socialPush(t *testing.T, c *sdk.Client, kind string, match func(*sdk.SocialPush) bool) *sdk.SocialPush {
	t.Helper()
	return next(t, c, kind+" push", func(p sdk.Push) bool {
		return p.Social != nil && p.Social.Kind == kind && (match == nil || match(p.Social))
	}).Social
}

// TestFriendsAndGroupsOverNative runs every friends and groups op through the
// native protocol, and checks that the other party's sessions get the typed
// pushes: a new request, an answer, a removal, a group change.
func TestFriendsAndGroupsOverNative(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		hs := srv.Config.ServerName
		user := func(name string) (*testserver.Client, *sdk.Client) {
			c := srv.Register(t, name, "pw")
			return c, dial(t, srv, sdk.Options{Token: c.Token})
		}
		aliceMx, alice := user("alice")
		bobMx, bob := user("bob")
		_, carol := user("carol")
		a, b := aliceMx.UserID, bobMx.UserID

		for _, tc := range []struct {
			name, to, code string
		}{
			{"oneself", a, "M_INVALID_PARAM"},
			{"unknown user", "@nobody:" + hs, "M_NOT_FOUND"},
			{"malformed", "nobody", "M_INVALID_PARAM"},
			{"missing", "", "M_MISSING_PARAM"},
		} {
			if _, err := alice.RequestFriend(ctx, tc.to, ""); errCode(err) != tc.code {
				t.Errorf("RequestFriend(%s: %q) = %v; want %s", tc.name, tc.to, err, tc.code)
			}
		}

		req, err := alice.RequestFriend(ctx, b, "hello from native")
		if err != nil {
			t.Fatal(err)
		}
		p := socialPush(t, bob, "friend_request", nil)
		if p.From != a || p.Message != "hello from native" || p.RoomID != req.RoomID {
			t.Errorf("friend_request push = %+v; want from alice with her message in %s", p, req.RoomID)
		}
		if rs, err := bob.FriendRequests(ctx); err != nil || len(rs.Incoming) != 1 || rs.Incoming[0].UserID != a {
			t.Errorf("bob's FriendRequests = %+v, %v; want alice's", rs, err)
		}
		if again, err := alice.RequestFriend(ctx, b, "again"); err != nil || again.RoomID != req.RoomID {
			t.Errorf("duplicate RequestFriend = %+v, %v; want the same request", again, err)
		}
		if _, err := carol.AcceptFriend(ctx, a); errCode(err) != "M_NOT_FOUND" {
			t.Errorf("carol accepting a request to bob = %v; want M_NOT_FOUND", err)
		}
		roomID, err := bob.AcceptFriend(ctx, a)
		if err != nil || roomID != req.RoomID {
			t.Fatalf("AcceptFriend = %q, %v; want %s", roomID, err, req.RoomID)
		}
		if p := socialPush(t, alice, "friend_answer", nil); p.Answer != "accepted" || p.From != b {
			t.Errorf("friend_answer push = %+v; want accepted by bob", p)
		}
		if fs, err := alice.Friends(ctx); err != nil || len(fs) != 1 || fs[0].UserID != b || fs[0].RoomID != roomID {
			t.Errorf("alice's Friends = %+v, %v; want bob in %s", fs, err, roomID)
		}
		if _, err := alice.SendText(ctx, roomID, "first message as friends"); err != nil {
			t.Fatal(err)
		}
		next(t, bob, "alice's message", eventOf("m.room.message", func(e native.Event) bool { return e.Content["body"] == "first message as friends" }))

		// Decline and cancel reach the other side as answers.
		if _, err := carol.RequestFriend(ctx, a, ""); err != nil {
			t.Fatal(err)
		}
		socialPush(t, alice, "friend_request", func(p *sdk.SocialPush) bool { return p.From == carol.UserID })
		if err := alice.DeclineFriend(ctx, carol.UserID); err != nil {
			t.Fatal(err)
		}
		if p := socialPush(t, carol, "friend_answer", nil); p.Answer != "declined" {
			t.Errorf("carol's answer = %+v; want declined", p)
		}
		if _, err := carol.RequestFriend(ctx, b, ""); err != nil {
			t.Fatal(err)
		}
		if err := carol.CancelFriendRequest(ctx, b); err != nil {
			t.Fatal(err)
		}
		if p := socialPush(t, bob, "friend_answer", func(p *sdk.SocialPush) bool { return p.From == carol.UserID }); p.Answer != "cancelled" {
			t.Errorf("bob's push after carol's cancel = %+v; want cancelled", p)
		}
		if _, err := bob.AcceptFriend(ctx, carol.UserID); errCode(err) != "M_NOT_FOUND" {
			t.Errorf("accepting a cancelled request = %v; want M_NOT_FOUND", err)
		}

		// Block and unblock.
		if err := bob.Block(ctx, carol.UserID); err != nil {
			t.Fatal(err)
		}
		if bl, err := bob.Blocked(ctx); err != nil || !slices.Equal(bl, []string{carol.UserID}) {
			t.Errorf("Blocked = %v, %v; want carol", bl, err)
		}
		if err := bob.Unblock(ctx, carol.UserID); err != nil {
			t.Fatal(err)
		}

		// Groups.
		g, err := alice.CreateGroup(ctx, "Native group", b, carol.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if p := socialPush(t, bob, "group_change", nil); p.Change != "invite" || p.RoomID != g || p.From != a {
			t.Errorf("bob's group push = %+v; want an invite to %s", p, g)
		}
		for _, c := range []*sdk.Client{bob, carol} {
			if err := c.JoinGroup(ctx, g); err != nil {
				t.Fatal(err)
			}
		}
		ms, err := bob.GroupMembers(ctx, g)
		if err != nil || len(ms) != 3 || ms[0].UserID != a || ms[0].Role != "owner" {
			t.Errorf("GroupMembers = %+v, %v; want alice first as owner, three members", ms, err)
		}
		if err := bob.TransferGroup(ctx, g, b); errCode(err) != "M_FORBIDDEN" {
			t.Errorf("non-owner TransferGroup = %v; want M_FORBIDDEN", err)
		}
		if err := bob.DissolveGroup(ctx, g); errCode(err) != "M_FORBIDDEN" {
			t.Errorf("non-owner DissolveGroup = %v; want M_FORBIDDEN", err)
		}
		name := "Renamed"
		if err := alice.UpdateGroup(ctx, native.GroupUpdate{RoomID: g, Name: &name}); err != nil {
			t.Fatal(err)
		}
		if p := socialPush(t, bob, "group_change", func(p *sdk.SocialPush) bool { return p.Change == "updated" }); p.RoomID != g {
			t.Errorf("update push = %+v", p)
		}
		if err := bob.MuteGroup(ctx, g, true); err != nil {
			t.Fatal(err)
		}
		if gs, err := bob.Groups(ctx); err != nil || len(gs) != 1 || gs[0].Name != name || !gs[0].Muted {
			t.Errorf("bob's Groups = %+v, %v; want renamed and muted", gs, err)
		}
		if err := alice.KickFromGroup(ctx, g, carol.UserID, "bye"); err != nil {
			t.Fatal(err)
		}
		if p := socialPush(t, carol, "group_change", func(p *sdk.SocialPush) bool { return p.Change == "removed" }); p.From != a {
			t.Errorf("kick push = %+v", p)
		}
		if _, err := carol.GroupMembers(ctx, g); errCode(err) != "M_FORBIDDEN" {
			t.Errorf("a kicked member's GroupMembers = %v; want M_FORBIDDEN", err)
		}
		if err := alice.InviteToGroup(ctx, g, carol.UserID); err != nil {
			t.Fatal(err)
		}
		if err := carol.LeaveGroup(ctx, g); err != nil { // rejects the invite
			t.Fatal(err)
		}
		if err := alice.TransferGroup(ctx, g, b); err != nil {
			t.Fatal(err)
		}
		if err := alice.LeaveGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		if err := bob.DissolveGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		if gs, err := bob.Groups(ctx); err != nil || len(gs) != 0 {
			t.Errorf("Groups after dissolving = %+v, %v; want none", gs, err)
		}

		// Removing a friend reaches the other side.
		if err := bob.RemoveFriend(ctx, a); err != nil {
			t.Fatal(err)
		}
		if p := socialPush(t, alice, "friend_removed", nil); p.From != b {
			t.Errorf("friend_removed push = %+v", p)
		}
		if fs, err := alice.Friends(ctx); err != nil || len(fs) != 0 {
			t.Errorf("alice's Friends after removal = %+v, %v", fs, err)
		}
	})
}

// TestBlockedUserHiddenFromNativePushes: a native session of a user who blocked
// mallory gets her messages as hidden stubs (seq kept gapless) and not her invites.
func TestBlockedUserHiddenFromNativePushes(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		aliceMx := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		mallory := srv.Register(t, "mallory", "pw")
		var created map[string]string
		bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &created)
		room := created["room_id"]
		for _, c := range []*testserver.Client{aliceMx, mallory} {
			c.MustDo("POST", "/_matrix/client/v3/join/"+room, map[string]any{}, nil)
		}
		alice := dial(t, srv, sdk.Options{Token: aliceMx.Token})
		if err := alice.Block(ctx, mallory.UserID); err != nil {
			t.Fatal(err)
		}
		say := func(c *testserver.Client, body string) {
			c.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+sdk.TxnID(), map[string]any{"msgtype": "m.text", "body": body}, nil)
		}
		say(mallory, "you cannot see this")
		say(bob, "you can see this")
		stub := next(t, alice, "mallory's message", eventOf("m.room.message", func(e native.Event) bool { return e.Sender == mallory.UserID }))
		if len(stub.Event.Event.Content) != 0 || stub.Event.Event.Unsigned["im.hongyan.ignored"] != true {
			t.Errorf("mallory's message pushed as %+v; want a hidden stub", stub.Event.Event)
		}
		shown := next(t, alice, "bob's message", eventOf("m.room.message", nil))
		if shown.Event.Event.Content["body"] != "you can see this" || shown.Event.Seq != stub.Event.Seq+1 {
			t.Errorf("bob's message = %+v at seq %d; want it right after the stub (%d)", shown.Event.Event.Content, shown.Event.Seq, stub.Event.Seq)
		}
		mallory.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{aliceMx.UserID}}, &created)
		fromMallory := created["room_id"]
		bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{aliceMx.UserID}}, &created)
		inv := next(t, alice, "an invite", eventOf("m.room.member", func(e native.Event) bool { return e.Content["membership"] == "invite" }))
		if inv.Event.RoomID == fromMallory {
			t.Errorf("mallory's invite was pushed")
		}
	})
}
