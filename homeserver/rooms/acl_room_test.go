package rooms

import (
	"context"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestServerAllowed: the room's current m.room.server_acl and its create event's
// m.federate decide which servers may take part; a later ACL replaces an earlier one.
func TestServerAllowed(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		alice := uid("alice")
		newRoom := func(req CreateRequest, acls ...map[string]any) string {
			t.Helper()
			roomID, err := s.CreateRoom(ctx, alice, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, acl := range acls {
				if _, err := s.Send(ctx, roomID, Proto{Sender: alice, Type: "m.room.server_acl", StateKey: strptr(""), Content: mustJSON(acl)}); err != nil {
					t.Fatalf("send ACL %v: %v", acl, err)
				}
			}
			return roomID
		}
		open := newRoom(CreateRequest{})
		local := newRoom(CreateRequest{CreationContent: mustJSON(map[string]bool{"m.federate": false})})
		denyEvil := newRoom(CreateRequest{}, map[string]any{"allow": []string{"*"}, "deny": []string{"*.evil.example", "evil.example"}})
		noIPs := newRoom(CreateRequest{}, map[string]any{"allow": []string{"*"}, "allow_ip_literals": false})
		onlyOrg := newRoom(CreateRequest{}, map[string]any{"allow": []string{"*.org"}})
		// The first ACL denies everyone but good.example; the second, current one
		// lets everyone in but bad.example.
		replaced := newRoom(CreateRequest{},
			map[string]any{"allow": []string{"good.example"}},
			map[string]any{"allow": []string{"*"}, "deny": []string{"bad.example"}})
		emptyACL := newRoom(CreateRequest{}, map[string]any{})

		for _, tc := range []struct {
			name, roomID, server string
			want                 bool
		}{
			{"no ACL", open, "anywhere.example", true},
			{"no ACL, IP literal", open, "127.0.0.1:8448", true},
			{"m.federate false", local, "anywhere.example", false},
			{"deny glob", denyEvil, "a.evil.example", false},
			{"deny exact with port", denyEvil, "evil.example:8448", false},
			{"deny glob needs the dot", denyEvil, "notevil.example", true},
			{"allow_ip_literals false, v4", noIPs, "10.1.2.3", false},
			{"allow_ip_literals false, v6", noIPs, "[::1]:8448", false},
			{"allow_ip_literals false, name", noIPs, "matrix.example", true},
			{"allow glob", onlyOrg, "matrix.org", true},
			{"allow glob misses", onlyOrg, "matrix.com", false},
			{"current ACL wins: earlier allow gone", replaced, "other.example", true},
			{"current ACL wins: its deny applies", replaced, "bad.example", false},
			{"empty ACL allows nobody", emptyACL, "matrix.org", false},
		} {
			got, err := s.ServerAllowed(ctx, tc.roomID, tc.server)
			if err != nil {
				t.Fatalf("%s: ServerAllowed(%s): %v", tc.name, tc.server, err)
			}
			if got != tc.want {
				t.Errorf("%s: ServerAllowed(%s) = %v; want %v", tc.name, tc.server, got, tc.want)
			}
		}
	})
}
