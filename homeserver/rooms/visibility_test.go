package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestVisibleTo is the history visibility rule for every visibility × membership at
// the event, for a user (joined now or not) and for a server.
func TestVisibleTo(t *testing.T) {
	user, server := User("@bob:b.test"), Server("b.test")
	type want struct{ userNow, userGone, server bool } // user joined now, user not joined now, server
	for _, tc := range []struct {
		hv, membership string
		want
	}{
		{"world_readable", "join", want{true, true, true}},
		{"world_readable", "invite", want{true, true, true}},
		{"world_readable", "leave", want{true, true, true}},
		{"world_readable", "", want{true, true, true}},
		{"shared", "join", want{true, true, true}},
		{"shared", "invite", want{true, false, true}},
		{"shared", "leave", want{true, false, true}},
		{"shared", "", want{true, false, true}},
		{"invited", "join", want{true, true, true}},
		{"invited", "invite", want{true, true, true}},
		{"invited", "leave", want{false, false, false}},
		{"invited", "", want{false, false, false}},
		{"joined", "join", want{true, true, true}},
		{"joined", "invite", want{false, false, false}},
		{"joined", "leave", want{false, false, false}},
		{"joined", "", want{false, false, false}},
		// An unknown value is as strict as joined.
		{"nonsense", "join", want{true, true, true}},
		{"nonsense", "invite", want{false, false, false}},
		{"nonsense", "", want{false, false, false}},
	} {
		got := want{visibleTo(user, tc.hv, tc.membership, true), visibleTo(user, tc.hv, tc.membership, false),
			visibleTo(server, tc.hv, tc.membership, false)}
		if got != tc.want {
			t.Errorf("visibleTo(%s, membership %q) = %+v; want %+v", tc.hv, tc.membership, got, tc.want)
		}
	}
}

// TestOwnMembershipAndBestMembership: a reader always sees the membership events of
// itself (a user) or of its users (a server), and a server's membership is the best
// any of its users holds.
func TestOwnMembershipAndBestMembership(t *testing.T) {
	key := func(s string) *string { return &s }
	for _, tc := range []struct {
		r        Reader
		typ      string
		stateKey *string
		want     bool
	}{
		{User("@bob:b.test"), "m.room.member", key("@bob:b.test"), true},
		{User("@bob:b.test"), "m.room.member", key("@eve:b.test"), false},
		{User("@bob:b.test"), "m.room.message", nil, false},
		{Server("b.test"), "m.room.member", key("@eve:b.test"), true},
		{Server("b.test"), "m.room.member", key("@eve:evilb.test"), false},
		{Server("b.test"), "m.room.member", key("@eve:b.test.evil"), false},
		{Server("b.test"), "m.room.topic", key(""), false},
	} {
		if got := tc.r.ownsMembership(tc.typ, tc.stateKey); got != tc.want {
			t.Errorf("%s.ownsMembership(%s, %v) = %v; want %v", tc.r, tc.typ, *orEmpty(tc.stateKey), got, tc.want)
		}
	}
	for _, tc := range []struct {
		ms   []string
		want string
	}{
		{nil, ""},
		{[]string{"leave", "ban"}, ""},
		{[]string{"leave", "invite"}, "invite"},
		{[]string{"invite", "join", "leave"}, "join"},
	} {
		if got := bestMembership(tc.ms); got != tc.want {
			t.Errorf("bestMembership(%q) = %q; want %q", tc.ms, got, tc.want)
		}
	}
}

func orEmpty(s *string) *string {
	if s == nil {
		e := ""
		return &e
	}
	return s
}

// TestHistoryVisibilityInRooms runs the rules through the database: in a room of
// each visibility alice sends one message while bob has no membership, one while
// he is invited, one while joined and one after he left; then bob rejoins and she
// sends one more. Bob's reads (by position and by seq), and a server with nobody in
// the room, see what the rules say.
func TestHistoryVisibilityInRooms(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		key, err := serverkey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		s := New(db, Config{ServerName: "hv.test", Key: key})
		alice, bob := "@alice:hv.test", "@bob:hv.test"
		for _, tc := range []struct {
			hv string
			// Messages bob sees after leaving, after rejoining; and a server
			// that never had a member.
			gone, back, stranger []string
		}{
			{"world_readable", all[:4], all, all},
			{"shared", all[2:3], all, all},
			{"invited", all[1:3], []string{all[1], all[2], all[4]}, nil},
			{"joined", all[2:3], append(slices.Clone(all[2:3]), all[4]), nil},
		} {
			t.Run(tc.hv, func(t *testing.T) {
				room, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat", InitialState: []StateEvent{{
					Type: "m.room.history_visibility", Content: json.RawMessage(fmt.Sprintf(`{"history_visibility":%q}`, tc.hv))}}})
				if err != nil {
					t.Fatal(err)
				}
				say := func(body string) {
					t.Helper()
					if _, err := s.Send(ctx, room, Proto{Sender: alice, Type: "m.room.message",
						Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))}); err != nil {
						t.Fatal(err)
					}
				}
				member := func(sender, m string) {
					t.Helper()
					if _, err := s.SetMembership(ctx, room, Membership{Sender: sender, Target: bob, Membership: m}); err != nil {
						t.Fatal(err)
					}
				}
				say(all[0])
				member(alice, "invite")
				say(all[1])
				member(bob, "join")
				say(all[2])
				member(bob, "leave")
				say(all[3])
				check := func(when string, want []string) {
					t.Helper()
					page, err := s.Messages(ctx, room, bob, MessagesQuery{Backward: true, Limit: 100})
					if err != nil {
						t.Fatal(err)
					}
					if got := messageBodies(page.Chunk); !slices.Equal(got, want) {
						t.Errorf("%s: /messages for bob = %q; want %q", when, got, want)
					}
					evs, _, err := s.EventsAfterSeq(ctx, room, bob, 0, 100)
					if err != nil {
						t.Fatal(err)
					}
					if got := messageBodies(evs); !slices.Equal(got, want) {
						t.Errorf("%s: events by seq for bob = %q; want %q", when, got, want)
					}
				}
				check("after bob left", tc.gone)
				member(bob, "join")
				say(all[4])
				check("after bob rejoined", tc.back)

				rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 ORDER BY stream_pos`, room)
				if err != nil {
					t.Fatal(err)
				}
				shown, err := s.filterRows(ctx, room, Server("stranger.test"), rows)
				if err != nil {
					t.Fatal(err)
				}
				if got := messageBodies(clientEvents(shown)); !slices.Equal(got, tc.stranger) {
					t.Errorf("a server never in the room sees %q; want %q", got, tc.stranger)
				}
			})
		}
	})
}

var all = []string{"before invite", "while invited", "while joined", "after leave", "after rejoin"}

// messageBodies lists the bodies of the m.room.message events, oldest first.
func messageBodies(evs []ClientEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == "m.room.message" {
			out = append(out, gjson.GetBytes(ev.Content, "body").String())
		}
	}
	if len(evs) > 1 && evs[0].StreamPos > evs[len(evs)-1].StreamPos {
		slices.Reverse(out)
	}
	return out
}

// TestBundledEditsFollowVisibility: an edit bob may not see (sent after he left a
// room whose history is for joined members) does not show through the bundled
// aggregations of the message he may see.
func TestBundledEditsFollowVisibility(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		key, err := serverkey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		s := New(db, Config{ServerName: "hv.test", Key: key})
		alice, bob := "@alice:hv.test", "@bob:hv.test"
		room, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat", InitialState: []StateEvent{{
			Type: "m.room.history_visibility", Content: json.RawMessage(`{"history_visibility":"joined"}`)}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetMembership(ctx, room, Membership{Sender: bob, Target: bob, Membership: "join"}); err != nil {
			t.Fatal(err)
		}
		msg, err := s.Send(ctx, room, Proto{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"seen"}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetMembership(ctx, room, Membership{Sender: bob, Target: bob, Membership: "leave"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Send(ctx, room, Proto{Sender: alice, Type: "m.room.message", Content: json.RawMessage(fmt.Sprintf(
			`{"msgtype":"m.text","body":"* secret","m.new_content":{"msgtype":"m.text","body":"secret"},"m.relates_to":{"rel_type":"m.replace","event_id":%q}}`,
			msg.EventID))}); err != nil {
			t.Fatal(err)
		}
		for _, who := range []struct {
			user     string
			wantEdit bool
		}{{alice, true}, {bob, false}} {
			ev, err := s.Event(ctx, room, who.user, msg.EventID)
			if err != nil {
				t.Fatalf("Event(%s) for %s: %v", msg.EventID, who.user, err)
			}
			rel, _ := ev.Unsigned["m.relations"].(map[string]any)
			if _, got := rel["m.replace"]; got != who.wantEdit {
				t.Errorf("Event(%s) for %s bundles an edit: %v; want %v", msg.EventID, who.user, got, who.wantEdit)
			}
		}
	})
}
