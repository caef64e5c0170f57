package clientapi_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

const im = "/_matrix/client/unstable/im.hongyan"

type friendRequest struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Requester string `json:"requester"`
	Target    string `json:"target"`
	Message   string `json:"message"`
}

type friendRequests struct {
	Incoming []friendRequest `json:"incoming"`
	Outgoing []friendRequest `json:"outgoing"`
}

type friend struct {
	UserID      string `json:"user_id"`
	RoomID      string `json:"room_id"`
	DisplayName string `json:"displayname"`
	Presence    string `json:"presence"`
}

// settle waits, up to a deadline, for cond: what the server's consumer of the
// events stream does after a request returns (a plain Matrix join seen, a
// blocked user's request declined).
func settle(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func requestsOf(t *testing.T, c *testserver.Client) friendRequests {
	t.Helper()
	var out friendRequests
	c.MustDo("GET", im+"/friends/requests", nil, &out)
	return out
}

func friendsOf(t *testing.T, c *testserver.Client) []string {
	t.Helper()
	var out struct {
		Friends []friend `json:"friends"`
	}
	c.MustDo("GET", im+"/friends", nil, &out)
	var ids []string
	for _, f := range out.Friends {
		ids = append(ids, f.UserID)
	}
	return ids
}

func friendsData(t *testing.T, c *testserver.Client) map[string]any {
	t.Helper()
	var out struct {
		Friends map[string]any `json:"friends"`
	}
	if st := c.Do("GET", "/_matrix/client/v3/user/"+url.PathEscape(c.UserID)+"/account_data/im.hongyan.friends", nil, &out); st != 200 && st != 404 {
		t.Fatalf("account data im.hongyan.friends = %d", st)
	}
	return out.Friends
}

func wantErr(t *testing.T, c *testserver.Client, method, path string, body any, status int, code string) {
	t.Helper()
	var e errBody
	if st := c.Do(method, path, body, &e); st != status || e.ErrCode != code {
		t.Errorf("%s %s as %s = %d %s; want %d %s", method, path, c.UserID, st, e.ErrCode, status, code)
	}
}

func TestFriendsOverHTTP(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		bob.MustDo("PUT", "/_matrix/client/v3/profile/@bob:localhost/displayname", map[string]string{"displayname": "Bob"}, nil)

		// Hostile requests.
		for _, tc := range []struct {
			body   any
			status int
			code   string
		}{
			{map[string]string{"user_id": "@alice:localhost"}, 400, "M_INVALID_PARAM"},
			{map[string]string{"user_id": "@nobody:localhost"}, 404, "M_NOT_FOUND"},
			{map[string]string{"user_id": "not a user"}, 400, "M_INVALID_PARAM"},
			{map[string]string{}, 400, "M_MISSING_PARAM"},
			{map[string]any{"user_id": 5}, 400, "M_BAD_JSON"},
		} {
			wantErr(t, alice, "POST", im+"/friends/requests", tc.body, tc.status, tc.code)
		}

		var req friendRequest
		alice.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": bob.UserID, "message": "hi bob, it's alice"}, &req)
		if req.RoomID == "" || req.UserID != bob.UserID || req.Requester != alice.UserID {
			t.Fatalf("request = %+v; want a room and bob", req)
		}
		// A duplicate is the same request.
		var again friendRequest
		alice.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": bob.UserID, "message": "again"}, &again)
		if again.RoomID != req.RoomID {
			t.Errorf("duplicate request room = %s; want %s", again.RoomID, req.RoomID)
		}
		if got := requestsOf(t, alice); len(got.Outgoing) != 1 || got.Outgoing[0].UserID != bob.UserID || len(got.Incoming) != 0 {
			t.Errorf("alice's requests = %+v; want one outgoing to bob", got)
		}
		got := requestsOf(t, bob)
		if len(got.Incoming) != 1 || got.Incoming[0].UserID != alice.UserID || got.Incoming[0].Message != "hi bob, it's alice" {
			t.Fatalf("bob's requests = %+v; want alice's with her message", got)
		}
		// Bob sees a DM invite, as any Matrix client would.
		var sync struct {
			Rooms struct {
				Invite map[string]any `json:"invite"`
			} `json:"rooms"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/sync", nil, &sync)
		if _, ok := sync.Rooms.Invite[req.RoomID]; !ok {
			t.Errorf("bob's sync invites = %v; want %s", sync.Rooms.Invite, req.RoomID)
		}
		// Someone else cannot answer it.
		wantErr(t, carol, "POST", im+"/friends/requests/"+alice.UserID+"/accept", nil, 404, "M_NOT_FOUND")

		var acc map[string]string
		bob.MustDo("POST", im+"/friends/requests/"+alice.UserID+"/accept", nil, &acc)
		if acc["room_id"] != req.RoomID {
			t.Errorf("accept = %v; want room %s", acc, req.RoomID)
		}
		for _, c := range []*testserver.Client{alice, bob} {
			other := bob.UserID
			if c == bob {
				other = alice.UserID
			}
			if f := friendsOf(t, c); !slices.Equal(f, []string{other}) {
				t.Errorf("%s's friends = %v; want [%s]", c.UserID, f, other)
			}
			if d := friendsData(t, c); d[other] == nil {
				t.Errorf("%s's im.hongyan.friends = %v; want %s", c.UserID, d, other)
			}
			var direct map[string][]string
			c.MustDo("GET", "/_matrix/client/v3/user/"+url.PathEscape(c.UserID)+"/account_data/m.direct", nil, &direct)
			if !slices.Contains(direct[other], req.RoomID) {
				t.Errorf("%s's m.direct = %v; want %s: %s", c.UserID, direct, other, req.RoomID)
			}
		}
		var fl struct {
			Friends []friend `json:"friends"`
		}
		alice.MustDo("GET", im+"/friends", nil, &fl)
		if len(fl.Friends) != 1 || fl.Friends[0].DisplayName != "Bob" || fl.Friends[0].Presence == "" {
			t.Errorf("alice's friend list = %+v; want Bob with a presence", fl.Friends)
		}
		// They chat in the friends' room.
		sendText(t, bob, req.RoomID, "t1", "hello alice")
		if msgs, _ := messages(t, alice, req.RoomID, "dir=b&limit=10"); !slices.Contains(bodies(msgs), "hello alice") {
			t.Errorf("alice reads %v; want bob's message", bodies(msgs))
		}
		if got := requestsOf(t, bob); len(got.Incoming)+len(got.Outgoing) != 0 {
			t.Errorf("bob's requests after accepting = %+v; want none", got)
		}
		wantErr(t, alice, "POST", im+"/friends/requests", map[string]string{"user_id": bob.UserID}, 400, "M_BAD_STATE")

		// A cancelled request cannot be accepted.
		alice.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": carol.UserID}, nil)
		alice.MustDo("POST", im+"/friends/requests/"+carol.UserID+"/cancel", nil, nil)
		wantErr(t, carol, "POST", im+"/friends/requests/"+alice.UserID+"/accept", nil, 404, "M_NOT_FOUND")
		if got := requestsOf(t, carol); len(got.Incoming) != 0 {
			t.Errorf("carol's requests after the cancel = %+v; want none", got)
		}
		wantErr(t, alice, "POST", im+"/friends/requests/"+carol.UserID+"/cancel", nil, 404, "M_NOT_FOUND")

		// A declined one is gone from both sides.
		carol.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": alice.UserID, "message": "hey"}, nil)
		alice.MustDo("POST", im+"/friends/requests/"+carol.UserID+"/decline", nil, nil)
		if a, c := requestsOf(t, alice), requestsOf(t, carol); len(a.Incoming)+len(c.Outgoing) != 0 {
			t.Errorf("after decline: alice %+v, carol %+v; want none", a, c)
		}

		// A request each way is a friendship.
		carol.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": bob.UserID}, nil)
		bob.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": carol.UserID}, nil)
		if f := friendsOf(t, carol); !slices.Equal(f, []string{bob.UserID}) {
			t.Errorf("carol's friends after crossing requests = %v; want bob", f)
		}

		// Removing a friend ends it on both sides.
		alice.MustDo("DELETE", im+"/friends/"+bob.UserID, nil, nil)
		if f := friendsOf(t, bob); slices.Contains(f, alice.UserID) {
			t.Errorf("bob's friends after removal = %v; want no alice", f)
		}
		if d := friendsData(t, bob); d[alice.UserID] != nil {
			t.Errorf("bob's im.hongyan.friends after removal = %v", d)
		}
		wantErr(t, alice, "DELETE", im+"/friends/"+bob.UserID, nil, 404, "M_NOT_FOUND")
	})
}

func TestFriendAcceptedByPlainJoinAndBlocking(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		mallory := srv.Register(t, "mallory", "pw")

		// Bob answers with a plain Matrix join, as Element would.
		var req friendRequest
		alice.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": bob.UserID}, &req)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(req.RoomID), map[string]any{}, nil)
		settle(t, "alice and bob friends after a plain join", func() bool {
			return slices.Contains(friendsOf(t, alice), bob.UserID) && friendsData(t, bob)[alice.UserID] != nil
		})
		// A plain leave is a removal.
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(req.RoomID)+"/leave", map[string]any{}, nil)
		settle(t, "friendship ended by a plain leave", func() bool {
			return len(friendsOf(t, alice)) == 0 && friendsData(t, alice)[bob.UserID] == nil
		})

		// Blocking: the blocked user's request is declined unseen.
		alice.MustDo("POST", im+"/blocked/"+mallory.UserID, nil, nil)
		var ignored struct {
			Ignored map[string]any `json:"ignored_users"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/user/@alice:localhost/account_data/m.ignored_user_list", nil, &ignored)
		if _, ok := ignored.Ignored[mallory.UserID]; !ok {
			t.Errorf("m.ignored_user_list = %v; want mallory", ignored.Ignored)
		}
		mallory.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": alice.UserID, "message": "let me in"}, nil)
		settle(t, "mallory's request declined", func() bool { return len(requestsOf(t, mallory).Outgoing) == 0 })
		if got := requestsOf(t, alice); len(got.Incoming) != 0 {
			t.Errorf("alice's requests = %+v; want mallory's dropped", got)
		}
		wantErr(t, alice, "POST", im+"/friends/requests", map[string]string{"user_id": mallory.UserID}, 403, "M_FORBIDDEN")
		var bl struct {
			Blocked []string `json:"blocked"`
		}
		alice.MustDo("GET", im+"/blocked", nil, &bl)
		if !slices.Equal(bl.Blocked, []string{mallory.UserID}) {
			t.Errorf("blocked = %v; want mallory", bl.Blocked)
		}
		alice.MustDo("DELETE", im+"/blocked/"+mallory.UserID, nil, nil)
		alice.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": mallory.UserID}, nil)
		mallory.MustDo("POST", im+"/friends/requests/"+alice.UserID+"/accept", nil, nil)
		if f := friendsOf(t, mallory); !slices.Equal(f, []string{alice.UserID}) {
			t.Errorf("mallory's friends after unblock and accept = %v", f)
		}
	})
}

type groupInfo struct {
	RoomID  string `json:"room_id"`
	Name    string `json:"name"`
	Owner   string `json:"owner"`
	Members int    `json:"joined_members"`
	Muted   bool   `json:"muted"`
}

func groupsOf(t *testing.T, c *testserver.Client) []groupInfo {
	t.Helper()
	var out struct {
		Groups []groupInfo `json:"groups"`
	}
	c.MustDo("GET", im+"/groups", nil, &out)
	return out.Groups
}

func rolesOf(t *testing.T, c *testserver.Client, roomID string) map[string]string {
	t.Helper()
	var out struct {
		Members []struct {
			UserID string `json:"user_id"`
			Role   string `json:"role"`
		} `json:"members"`
	}
	c.MustDo("GET", im+"/groups/"+url.PathEscape(roomID)+"/members", nil, &out)
	roles := map[string]string{}
	for _, m := range out.Members {
		roles[m.UserID] = m.Role
	}
	return roles
}

func TestGroupsOverHTTP(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		dave := srv.Register(t, "dave", "pw")

		wantErr(t, alice, "POST", im+"/groups", map[string]any{"members": []string{bob.UserID}}, 400, "M_MISSING_PARAM")
		wantErr(t, alice, "POST", im+"/groups", map[string]any{"name": "x", "members": []string{"@ghost:localhost"}}, 404, "M_NOT_FOUND")
		var created map[string]string
		alice.MustDo("POST", im+"/groups", map[string]any{"name": "Hiking", "members": []string{bob.UserID, carol.UserID}}, &created)
		g := created["room_id"]
		gp := im + "/groups/" + url.PathEscape(g)
		// The marker is in the create event, as any client sees it.
		var create map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(g)+"/state/m.room.create/", nil, &create)
		if create["im.hongyan.group"] == nil {
			t.Errorf("create content = %v; want the im.hongyan.group marker", create)
		}
		bob.MustDo("POST", gp+"/join", nil, nil)
		carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(g), map[string]any{}, nil) // a plain Matrix join
		if gs := groupsOf(t, bob); len(gs) != 1 || gs[0].Name != "Hiking" || gs[0].Owner != alice.UserID || gs[0].Members != 3 {
			t.Errorf("bob's groups = %+v; want Hiking owned by alice with 3 members", gs)
		}
		if r := rolesOf(t, bob, g); r[alice.UserID] != "owner" || r[bob.UserID] != "member" || len(r) != 3 {
			t.Errorf("roles = %v; want alice owner, bob and carol members", r)
		}

		// Non-owners may not transfer, dissolve, rename or kick.
		wantErr(t, bob, "POST", gp+"/transfer", map[string]string{"user_id": bob.UserID}, 403, "M_FORBIDDEN")
		wantErr(t, bob, "POST", gp+"/dissolve", nil, 403, "M_FORBIDDEN")
		wantErr(t, bob, "PUT", gp, map[string]string{"name": "Mine"}, 403, "M_FORBIDDEN")
		wantErr(t, bob, "POST", gp+"/kick", map[string]string{"user_id": carol.UserID}, 403, "M_FORBIDDEN")
		wantErr(t, alice, "POST", gp+"/leave", nil, 403, "M_FORBIDDEN") // the owner hands over first

		alice.MustDo("PUT", gp, map[string]string{"name": "Hiking club", "announcement": "Saturday 9am"}, nil)
		bob.MustDo("PUT", gp+"/mute", map[string]bool{"muted": true}, nil)
		for _, gi := range groupsOf(t, bob) {
			if gi.Name != "Hiking club" || !gi.Muted {
				t.Errorf("bob's group = %+v; want renamed and muted", gi)
			}
		}
		var rule map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape(g), nil, &rule)
		if acts, _ := rule["actions"].([]any); len(acts) != 0 {
			t.Errorf("mute rule = %v; want no actions", rule)
		}
		bob.MustDo("PUT", gp+"/mute", map[string]bool{"muted": false}, nil)
		if gs := groupsOf(t, bob); gs[0].Muted {
			t.Errorf("bob's group after unmute = %+v", gs[0])
		}

		// A kicked member reads nothing new.
		alice.MustDo("POST", gp+"/kick", map[string]string{"user_id": carol.UserID, "reason": "bye"}, nil)
		sendText(t, alice, g, "after-kick", "secret plans")
		if msgs, _ := messages(t, carol, g, "dir=b&limit=50"); slices.Contains(bodies(msgs), "secret plans") {
			t.Errorf("kicked carol reads %v", bodies(msgs))
		}
		wantErr(t, carol, "GET", gp+"/members", nil, 403, "M_FORBIDDEN")
		if gs := groupsOf(t, carol); len(gs) != 0 {
			t.Errorf("carol's groups after the kick = %+v", gs)
		}

		// Invite through the IM API; the invitee joins.
		bob.MustDo("POST", gp+"/invite", map[string]string{"user_id": dave.UserID}, nil)
		dave.MustDo("POST", gp+"/join", nil, nil)

		// Transfer: bob owns it, alice is demoted to admin and may leave.
		alice.MustDo("POST", gp+"/transfer", map[string]string{"user_id": bob.UserID}, nil)
		if r := rolesOf(t, dave, g); r[bob.UserID] != "owner" || r[alice.UserID] != "admin" {
			t.Errorf("roles after transfer = %v; want bob owner, alice admin", r)
		}
		wantErr(t, alice, "POST", gp+"/dissolve", nil, 403, "M_FORBIDDEN")
		alice.MustDo("POST", gp+"/leave", nil, nil)

		// Dissolve: everyone is out and no one can come back.
		bob.MustDo("POST", gp+"/dissolve", nil, nil)
		for _, c := range []*testserver.Client{alice, bob, dave} {
			if gs := groupsOf(t, c); len(gs) != 0 {
				t.Errorf("%s's groups after dissolve = %+v", c.UserID, gs)
			}
		}
		var e errBody
		if st := dave.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(g), map[string]any{}, &e); st == 200 {
			t.Errorf("joining a dissolved group = %d; want refused", st)
		}
		var marker map[string]any
		var state []struct {
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(g)+"/state", nil, &state)
		for _, ev := range state {
			if ev.Type == "im.hongyan.group" {
				json.Unmarshal(ev.Content, &marker)
			}
		}
		if marker["dissolved"] != true {
			t.Errorf("group marker after dissolve = %v; want dissolved", marker)
		}
	})
}

func TestGroupSizeCap(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		var cs []*testserver.Client
		for _, name := range []string{"u1", "u2", "u3", "u4"} {
			cs = append(cs, srv.Register(t, name, "pw"))
		}
		owner := cs[0]
		wantErr(t, owner, "POST", im+"/groups", map[string]any{"name": "big", "members": []string{cs[1].UserID, cs[2].UserID, cs[3].UserID}}, 403, "M_RESOURCE_LIMIT_EXCEEDED")
		var created map[string]string
		owner.MustDo("POST", im+"/groups", map[string]any{"name": "small", "members": []string{cs[1].UserID, cs[2].UserID}}, &created)
		g := created["room_id"]
		// The cap holds for a plain Matrix invite too.
		wantErr(t, owner, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(g)+"/invite", map[string]string{"user_id": cs[3].UserID}, 403, "M_RESOURCE_LIMIT_EXCEEDED")
		wantErr(t, owner, "POST", im+"/groups/"+url.PathEscape(g)+"/invite", map[string]string{"user_id": cs[3].UserID}, 403, "M_RESOURCE_LIMIT_EXCEEDED")
		// An invitee's join is counted already.
		cs[1].MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(g), map[string]any{}, nil)
		// An ordinary room has no cap.
		room := createRoom(t, owner, map[string]any{"invite": []string{cs[1].UserID, cs[2].UserID, cs[3].UserID}})
		if room == "" {
			t.Fatal("no room")
		}
	}, func(c *config.Config) { c.Social.MaxGroupMembers = 3 })
}

// TestBlockedUserIsIgnored: once alice blocks mallory (m.ignored_user_list),
// mallory's messages are gone from alice's /sync and /messages, her invites from
// alice's sync, while bob still sees everything and state events still show.
func TestBlockedUserIsIgnored(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		mallory := srv.Register(t, "mallory", "pw")
		room := createRoom(t, bob, map[string]any{"preset": "public_chat"})
		for _, c := range []*testserver.Client{alice, mallory} {
			c.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		}
		sendText(t, mallory, room, "m1", "before the block")
		alice.MustDo("POST", im+"/blocked/"+mallory.UserID, nil, nil)
		sendText(t, mallory, room, "m2", "after the block")
		sendText(t, bob, room, "b1", "bob speaks")

		if got := bodies(mustMessages(t, alice, room)); slices.Contains(got, "after the block") || slices.Contains(got, "before the block") || !slices.Contains(got, "bob speaks") {
			t.Errorf("alice's /messages = %v; want bob's message and none of mallory's", got)
		}
		if got := bodies(mustMessages(t, bob, room)); !slices.Contains(got, "after the block") {
			t.Errorf("bob's /messages = %v; want mallory's message", got)
		}
		var sync struct {
			Rooms struct {
				Join map[string]struct {
					Timeline struct {
						Events []event `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
				Invite map[string]any `json:"invite"`
			} `json:"rooms"`
			NextBatch string `json:"next_batch"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &sync)
		tl := sync.Rooms.Join[room].Timeline.Events
		if got := bodies(tl); slices.Contains(got, "after the block") || !slices.Contains(got, "bob speaks") {
			t.Errorf("alice's sync timeline = %v; want no message from mallory", got)
		}
		sawJoin := false
		for _, e := range tl {
			sawJoin = sawJoin || (e.Type == "m.room.member" && e.Sender == mallory.UserID)
		}
		if !sawJoin {
			t.Errorf("alice's sync timeline hides mallory's join; state events stay visible")
		}
		// Mallory's invite is hidden; bob's is not.
		fromMallory := createRoom(t, mallory, map[string]any{"invite": []string{alice.UserID}})
		fromBob := createRoom(t, bob, map[string]any{"invite": []string{alice.UserID}})
		alice.MustDo("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(sync.NextBatch), nil, &sync)
		if _, ok := sync.Rooms.Invite[fromMallory]; ok {
			t.Errorf("alice's sync shows mallory's invite")
		}
		if _, ok := sync.Rooms.Invite[fromBob]; !ok {
			t.Errorf("alice's sync invites = %v; want bob's %s", sync.Rooms.Invite, fromBob)
		}
		// And in sliding sync.
		sl := sliding(t, alice, "", map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 1}}})
		if _, ok := sl.Rooms[fromMallory]; ok {
			t.Errorf("alice's sliding sync shows mallory's invite")
		}
		if _, ok := sl.Rooms[fromBob]; !ok {
			t.Errorf("alice's sliding sync rooms lack bob's invite %s", fromBob)
		}
		// Unblocking shows her messages again.
		alice.MustDo("DELETE", im+"/blocked/"+mallory.UserID, nil, nil)
		settle(t, "mallory's messages visible again", func() bool {
			return slices.Contains(bodies(mustMessages(t, alice, room)), "after the block")
		})
	})
}

func mustMessages(t *testing.T, c *testserver.Client, roomID string) []event {
	t.Helper()
	msgs, _ := messages(t, c, roomID, "dir=b&limit=50")
	return msgs
}

// TestFriendRequestsSurviveRestart: requests and friendships are server state,
// the same after a restart.
func TestFriendRequestsSurviveRestart(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		carol := srv.Register(t, "carol", "pw")
		alice.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": bob.UserID, "message": "still there?"}, nil)
		carol.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": alice.UserID}, nil)
		alice.MustDo("POST", im+"/friends/requests/"+carol.UserID+"/accept", nil, nil)
		srv.Restart(t)
		if got := requestsOf(t, bob); len(got.Incoming) != 1 || got.Incoming[0].Message != "still there?" {
			t.Fatalf("bob's requests after a restart = %+v; want alice's", got)
		}
		if f := friendsOf(t, alice); !slices.Equal(f, []string{carol.UserID}) {
			t.Errorf("alice's friends after a restart = %v; want carol", f)
		}
		bob.MustDo("POST", im+"/friends/requests/"+alice.UserID+"/accept", nil, nil)
		if f := friendsOf(t, alice); !slices.Equal(f, []string{bob.UserID, carol.UserID}) {
			t.Errorf("alice's friends = %v; want bob and carol", f)
		}
	})
}

// TestUserDirectoryFindsByID: a whole user ID finds that user even with no room
// shared; search_all_users finds every local user by name.
func TestUserDirectoryFindsByID(t *testing.T) {
	t.Parallel()
	search := func(t *testing.T, c *testserver.Client, term string) []string {
		t.Helper()
		var res struct {
			Results []struct {
				UserID string `json:"user_id"`
			} `json:"results"`
		}
		c.MustDo("POST", "/_matrix/client/v3/user_directory/search", map[string]any{"search_term": term}, &res)
		var ids []string
		for _, r := range res.Results {
			ids = append(ids, r.UserID)
		}
		return ids
	}
	t.Run("default", func(t *testing.T) {
		t.Parallel()
		forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
			alice := srv.Register(t, "alice", "pw")
			srv.Register(t, "hermit", "pw")
			for _, tc := range []struct {
				term string
				want []string
			}{
				{"hermit", nil},
				{"@hermit:localhost", []string{"@hermit:localhost"}},
				{"@nobody:localhost", nil},
				{"@not a user", nil},
			} {
				if got := search(t, alice, tc.term); !slices.Equal(got, tc.want) {
					t.Errorf("search(%q) = %v; want %v", tc.term, got, tc.want)
				}
			}
		})
	})
	t.Run("search_all_users", func(t *testing.T) {
		t.Parallel()
		forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
			alice := srv.Register(t, "alice", "pw")
			srv.Register(t, "hermit", "pw")
			if got := search(t, alice, "herm"); !slices.Equal(got, []string{"@hermit:localhost"}) {
				t.Errorf("search(herm) with search_all_users = %v; want hermit", got)
			}
		}, func(c *config.Config) { c.UserDirectory.SearchAllUsers = true })
	})
}
