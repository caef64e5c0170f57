package rooms

import (
	"context"
	"math"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestPowerFor: the level the front-ends read for a user and a state event type
// follows the power levels event, and in room version 12 creators (the sender of the
// create event and its additional_creators) outrank every level and cannot be
// listed in, demoted by or kicked under the power levels.
func TestPowerFor(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		alice, bob, mod, carol := uid("alice"), uid("bob"), uid("mod"), uid("carol")
		v10, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat", RoomVersion: "10",
			PowerLevelContentOverride: rawJSON(t, map[string]any{
				"users": map[string]int{alice: 100, mod: 50}, "users_default": 3, "state_default": 40,
				"events": map[string]int{"m.room.name": 60},
			})})
		if err != nil {
			t.Fatal(err)
		}
		v12, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "trusted_private_chat", RoomVersion: "12", Invite: []string{bob},
			PowerLevelContentOverride: rawJSON(t, map[string]any{"users": map[string]int{mod: 50}})})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			room, user, eventType string
			wantUser, wantNeed    int64
		}{
			{v10, alice, "m.room.name", 100, 60},
			{v10, mod, "org.example.state", 50, 40},
			{v10, carol, "org.example.state", 3, 40},
			{v12, alice, "m.room.power_levels", math.MaxInt64, 0},
			{v12, bob, "m.room.power_levels", math.MaxInt64, 0},
			{v12, mod, "m.room.power_levels", 50, 100},
			{v12, carol, "org.example.state", 0, 50},
		} {
			user, need, err := s.PowerFor(ctx, tc.room, tc.user, tc.eventType)
			if err != nil || user != tc.wantUser || need != tc.wantNeed {
				t.Errorf("PowerFor(%s, %s) = %d, %d, %v; want %d, %d", tc.user, tc.eventType, user, need, err, tc.wantUser, tc.wantNeed)
			}
		}

		join(t, s, v12, bob)
		if _, err := s.SetMembership(ctx, v12, Membership{Sender: alice, Target: mod, Membership: "invite"}); err != nil {
			t.Fatal(err)
		}
		join(t, s, v12, mod)
		for _, tc := range []struct {
			name string
			do   func() error
			want mxerror.Code
		}{
			{"creator listed in power levels", func() error {
				_, err := s.Send(ctx, v12, Proto{Sender: alice, Type: "m.room.power_levels", StateKey: strptr(""),
					Content: rawJSON(t, map[string]any{"users": map[string]int{alice: 100, mod: 50}})})
				return err
			}, mxerror.Forbidden},
			{"moderator kicks an additional creator", func() error {
				_, err := s.SetMembership(ctx, v12, Membership{Sender: mod, Target: bob, Membership: "kick"})
				return err
			}, mxerror.Forbidden},
			{"additional creator kicks the moderator", func() error {
				_, err := s.SetMembership(ctx, v12, Membership{Sender: bob, Target: mod, Membership: "kick"})
				return err
			}, ""},
		} {
			if got := codeOf(tc.do()); got != tc.want {
				t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
			}
		}
	})
}
