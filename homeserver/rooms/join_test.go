package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// errJoinedRemotely ends a fake remote join: the test checks the servers it was
// asked to join through, not the join itself.
var errJoinedRemotely = errors.New("fake remote join")

// fakeDirectory answers alias queries for other servers and records remote joins.
// Its other Remote methods are not used here (the nil embedded interface panics).
type fakeDirectory struct {
	Remote
	aliases map[string][]string // alias → room ID, then its servers
	joined  []string            // servers of the last JoinRemote
}

func (f *fakeDirectory) QueryAlias(_ context.Context, server, alias string) (string, []string, error) {
	a, ok := f.aliases[alias]
	if !ok {
		return "", nil, ErrNotFound
	}
	return a[0], a[1:], nil
}

func (f *fakeDirectory) JoinRemote(_ context.Context, roomID, userID string, servers []string, _ map[string]any) error {
	f.joined = servers
	return errJoinedRemotely
}

// TestJoinByIDOrAlias: the one join rule every front-end calls resolves local and
// remote aliases, refuses names that are neither, and joins a remote room through
// the caller's via servers first, then those the alias's server names.
func TestJoinByIDOrAlias(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		dir := &fakeDirectory{aliases: map[string][]string{
			"#far:other.example": {"!far:other.example", "other.example", "third.example"},
		}}
		s.SetRemote(dir)
		alice, bob := uid("alice"), uid("bob")
		room, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat", RoomAliasName: "here"})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			room        string
			via         []string
			wantRoom    string
			wantCode    mxerror.Code
			wantServers []string // of the remote join, when one is expected
		}{
			{room: room, wantRoom: room},
			{room: "#here:" + testServer, wantRoom: room},
			{room: "#nowhere:" + testServer, wantCode: mxerror.NotFound},
			{room: "#nowhere:other.example", wantCode: mxerror.NotFound},
			{room: "#malformed", wantCode: mxerror.NotFound},
			{room: "nope", wantCode: mxerror.InvalidParam},
			{room: "#far:other.example", via: []string{"via.example"}, wantServers: []string{"via.example", "other.example", "third.example"}},
			{room: "!v12roomnamesnoserver", via: []string{"via.example", testServer}, wantServers: []string{"via.example"}},
			{room: "!v12roomnamesnoserver", wantCode: mxerror.NotFound},
		} {
			dir.joined = nil
			got, err := s.JoinByIDOrAlias(ctx, SelfJoin{UserID: bob, Room: tc.room, Via: tc.via})
			if tc.wantServers != nil {
				if !errors.Is(err, errJoinedRemotely) || !slices.Equal(dir.joined, tc.wantServers) {
					t.Errorf("JoinByIDOrAlias(%q, via %v) joined through %v (%v); want %v", tc.room, tc.via, dir.joined, err, tc.wantServers)
				}
				continue
			}
			if codeOf(err) != tc.wantCode || got != tc.wantRoom {
				t.Errorf("JoinByIDOrAlias(%q, via %v) = %q, %q; want %q, %q", tc.room, tc.via, got, codeOf(err), tc.wantRoom, tc.wantCode)
			}
		}
		if m, err := s.CurrentMembership(ctx, room, bob); err != nil || m != "join" {
			t.Errorf("bob's membership = %q, %v; want join", m, err)
		}
	})
}

// TestEditRule: an m.replace sent through Send must replace a visible event of
// the same sender and type that is neither state nor itself an edit; the same rule
// answers the client API's send and the native edit op.
func TestEditRule(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		alice, bob := uid("alice"), uid("bob")
		room, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetMembership(ctx, room, Membership{Sender: bob, Target: bob, Membership: "join"}); err != nil {
			t.Fatal(err)
		}
		send := func(sender, typ string, stateKey *string, content string) (Sent, error) {
			return s.Send(ctx, room, Proto{Sender: sender, Type: typ, StateKey: stateKey, Content: json.RawMessage(content)})
		}
		must := func(sent Sent, err error) string {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			return sent.EventID
		}
		edit := func(id string) string {
			return fmt.Sprintf(`{"msgtype":"m.text","body":"* e","m.new_content":{"msgtype":"m.text","body":"e"},"m.relates_to":{"rel_type":"m.replace","event_id":%q}}`, id)
		}
		empty := ""
		aliceMsg := must(send(alice, "m.room.message", nil, `{"msgtype":"m.text","body":"a"}`))
		topic := must(send(alice, "m.room.topic", &empty, `{"topic":"t"}`))
		aliceEdit := must(send(alice, "m.room.message", nil, edit(aliceMsg)))
		for _, tc := range []struct {
			name, sender, typ string
			stateKey          *string
			content           string
			want              mxerror.Code
		}{
			{"own message", alice, "m.room.message", nil, edit(aliceMsg), ""},
			{"another's message", bob, "m.room.message", nil, edit(aliceMsg), mxerror.Forbidden},
			{"another type", alice, "m.room.encrypted", nil, edit(aliceMsg), mxerror.Forbidden},
			{"a state event", alice, "m.room.topic", nil, edit(topic), mxerror.Forbidden},
			{"an edit", alice, "m.room.message", nil, edit(aliceEdit), mxerror.Forbidden},
			{"an unknown event", alice, "m.room.message", nil, edit("$nothing"), mxerror.NotFound},
			{"no event", alice, "m.room.message", nil, `{"m.relates_to":{"rel_type":"m.replace"}}`, mxerror.InvalidParam},
			{"a state event's content is not an edit", alice, "org.example.state", &empty, edit(aliceMsg), ""},
			{"a reply is not an edit", bob, "m.room.message", nil,
				fmt.Sprintf(`{"msgtype":"m.text","body":"r","m.relates_to":{"m.in_reply_to":{"event_id":%q}}}`, aliceMsg), ""},
		} {
			if _, err := send(tc.sender, tc.typ, tc.stateKey, tc.content); codeOf(err) != tc.want {
				t.Errorf("%s: Send(%s by %s) = %q; want %q", tc.name, tc.typ, tc.sender, codeOf(err), tc.want)
			}
		}
	})
}
