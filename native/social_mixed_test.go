package native_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// TestFriendRequestToMatrixClient: a native user sends a friend request to a user
// of mautrix-go, who sees a plain DM invite and accepts it by joining; both then
// see each other as friends (the native friends op; m.direct and
// im.hongyan.friends account data for the Matrix user) and chat. Once with both
// users on one server, once with them on two federating servers.
func TestFriendRequestToMatrixClient(t *testing.T) {
	for _, d := range storagetest.Engines() {
		for _, federated := range []bool{false, true} {
			name := string(d) + "/one server"
			if federated {
				name = string(d) + "/two servers"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				a := testserver.Start(t, d, testserver.Federated)
				b := a
				if federated {
					b = testserver.Start(t, d, testserver.Federated)
				}
				friendRequestToMatrixClient(t, a, b)
			})
		}
	}
}

func friendRequestToMatrixClient(t *testing.T, a, b *testserver.Server) {
	ctx := context.Background()
	aliceMx := a.Register(t, "alice", "pw")
	alice := dial(t, a, sdk.Options{Token: aliceMx.Token})
	bob := b.Register(t, "bob", "pw")
	cli, err := mautrix.NewClient(b.URL, id.UserID(bob.UserID), bob.Token)
	if err != nil {
		t.Fatal(err)
	}

	// A user who does not exist, on bob's server (asked over federation there).
	if _, err := alice.RequestFriend(ctx, "@ghost:"+b.Config.ServerName, ""); errCode(err) != "M_NOT_FOUND" {
		t.Errorf("request to a user who does not exist = %v; want M_NOT_FOUND", err)
	}
	// Alice finds bob by his user ID although they share no room (over
	// federation: a profile query to bob's server).
	var found struct {
		Results []struct {
			UserID string `json:"user_id"`
		} `json:"results"`
	}
	aliceMx.MustDo("POST", "/_matrix/client/v3/user_directory/search", map[string]any{"search_term": bob.UserID}, &found)
	if len(found.Results) != 1 || found.Results[0].UserID != bob.UserID {
		t.Errorf("directory search for %s = %+v; want bob", bob.UserID, found.Results)
	}
	req, err := alice.RequestFriend(ctx, bob.UserID, "hi bob, alice here")
	if err != nil {
		t.Fatalf("RequestFriend: %v", err)
	}
	// Bob's client sees a DM invite carrying the message as its reason.
	var since string
	deadline := time.Now().Add(15 * time.Second)
	var invite *event.Event
	for invite == nil {
		if time.Now().After(deadline) {
			t.Fatal("bob's client saw no invite within 15 s")
		}
		resp, err := cli.SyncRequest(ctx, 1000, since, "", false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if room := resp.Rooms.Invite[id.RoomID(req.RoomID)]; room != nil {
			for _, ev := range room.State.Events {
				if ev.Type == event.StateMember && ev.GetStateKey() == bob.UserID {
					ev.Content.ParseRaw(ev.Type)
					invite = ev
				}
			}
		}
	}
	member := invite.Content.AsMember()
	if member.Membership != event.MembershipInvite || !member.IsDirect || member.Reason != "hi bob, alice here" {
		t.Errorf("invite = %+v; want a direct invite with alice's message", member)
	}
	if _, err := cli.JoinRoomByID(ctx, id.RoomID(req.RoomID)); err != nil {
		t.Fatalf("bob joins the DM: %v", err)
	}
	if p := socialPush(t, alice, "friend_answer", nil); p.Answer != "accepted" || p.From != bob.UserID {
		t.Errorf("alice's push = %+v; want bob's acceptance", p)
	}
	if fs, err := alice.Friends(ctx); err != nil || len(fs) != 1 || fs[0].UserID != bob.UserID {
		t.Errorf("alice's friends = %+v, %v; want bob", fs, err)
	}
	settleFor(t, "bob's account data", func() bool {
		var friends struct {
			Friends map[string]any `json:"friends"`
		}
		var direct map[string][]string
		return cli.GetAccountData(ctx, "im.hongyan.friends", &friends) == nil && friends.Friends[aliceMx.UserID] != nil &&
			cli.GetAccountData(ctx, "m.direct", &direct) == nil && len(direct[aliceMx.UserID]) == 1 && direct[aliceMx.UserID][0] == req.RoomID
	})
	var aliceFriends struct {
		Friends map[string]any `json:"friends"`
	}
	aliceMx.MustDo("GET", "/_matrix/client/v3/user/"+aliceMx.UserID+"/account_data/im.hongyan.friends", nil, &aliceFriends)
	if aliceFriends.Friends[bob.UserID] == nil {
		t.Errorf("alice's im.hongyan.friends = %v; want bob", aliceFriends.Friends)
	}

	// They chat.
	if _, err := cli.SendText(ctx, id.RoomID(req.RoomID), "hello alice, from mautrix"); err != nil {
		t.Fatal(err)
	}
	next(t, alice, "bob's message", eventOf("m.room.message", func(e native.Event) bool { return e.Content["body"] == "hello alice, from mautrix" }))
	if _, err := alice.SendText(ctx, req.RoomID, "hello bob, from native"); err != nil {
		t.Fatal(err)
	}
	matrix := &matrixSide{cli: cli, since: since}
	matrix.waitFor(t, req.RoomID, "alice's message", func(ev *event.Event) bool {
		return ev.Type == event.EventMessage && ev.Content.AsMessage().Body == "hello bob, from native"
	})
}

// settleFor waits, up to a deadline, for cond.
func settleFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestFriendsAcrossServers: native users on two federating servers decline,
// withdraw, accept and end friend requests; each answer reaches the other server
// and its user's pushes and lists.
func TestFriendsAcrossServers(t *testing.T) {
	for _, d := range storagetest.Engines() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			a := testserver.Start(t, d, testserver.Federated)
			b := testserver.Start(t, d, testserver.Federated)
			alice := dial(t, a, sdk.Options{Token: a.Register(t, "alice", "pw").Token})
			bob := dial(t, b, sdk.Options{Token: b.Register(t, "bob", "pw").Token})

			// Declined.
			if _, err := alice.RequestFriend(ctx, bob.UserID, "first try"); err != nil {
				t.Fatal(err)
			}
			if p := socialPush(t, bob, "friend_request", nil); p.From != alice.UserID || p.Message != "first try" {
				t.Errorf("bob's push = %+v; want alice's request", p)
			}
			if err := bob.DeclineFriend(ctx, alice.UserID); err != nil {
				t.Fatal(err)
			}
			if p := socialPush(t, alice, "friend_answer", nil); p.Answer != "declined" {
				t.Errorf("alice's answer = %+v; want declined", p)
			}
			settleFor(t, "alice's request gone", func() bool {
				rs, err := alice.FriendRequests(ctx)
				return err == nil && len(rs.Outgoing) == 0
			})

			// Withdrawn.
			if _, err := alice.RequestFriend(ctx, bob.UserID, "second try"); err != nil {
				t.Fatal(err)
			}
			socialPush(t, bob, "friend_request", func(p *sdk.SocialPush) bool { return p.Message == "second try" })
			if err := alice.CancelFriendRequest(ctx, bob.UserID); err != nil {
				t.Fatal(err)
			}
			if p := socialPush(t, bob, "friend_answer", nil); p.Answer != "cancelled" {
				t.Errorf("bob's push = %+v; want cancelled", p)
			}
			if _, err := bob.AcceptFriend(ctx, alice.UserID); errCode(err) != "M_NOT_FOUND" {
				t.Errorf("accepting a withdrawn request = %v; want M_NOT_FOUND", err)
			}

			// Accepted, then ended from the other server.
			if _, err := bob.RequestFriend(ctx, alice.UserID, "my turn"); err != nil {
				t.Fatal(err)
			}
			socialPush(t, alice, "friend_request", func(p *sdk.SocialPush) bool { return p.Message == "my turn" })
			if _, err := alice.AcceptFriend(ctx, bob.UserID); err != nil {
				t.Fatal(err)
			}
			socialPush(t, bob, "friend_answer", func(p *sdk.SocialPush) bool { return p.Answer == "accepted" })
			if fs, err := bob.Friends(ctx); err != nil || len(fs) != 1 || fs[0].UserID != alice.UserID {
				t.Errorf("bob's friends = %+v, %v; want alice", fs, err)
			}
			if err := alice.RemoveFriend(ctx, bob.UserID); err != nil {
				t.Fatal(err)
			}
			socialPush(t, bob, "friend_removed", nil)
			if fs, err := bob.Friends(ctx); err != nil || len(fs) != 0 {
				t.Errorf("bob's friends after removal = %+v, %v; want none", fs, err)
			}
		})
	}
}
