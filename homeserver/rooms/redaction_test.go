package rooms

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestRedactionPerRoomVersion: a redaction goes through the room version's own
// algorithm (gomatrixserverlib's), so which content keys survive depends on the
// version: v11 keeps power levels' invite and a redaction's redacts, v8+ keep join
// rules' allow, and no version keeps unknown keys or a message's body.
func TestRedactionPerRoomVersion(t *testing.T) {
	type target struct {
		// send sends the event to redact and returns its ID; it may send more
		// events after it so that redacting it leaves the room's state alone.
		send func(ctx context.Context, s *Service, roomID, sender string) (string, error)
	}
	powerLevels := func(invite int) map[string]any {
		return map[string]any{"users": map[string]int{uid("alice"): 100}, "ban": 50, "kick": 50, "redact": 50,
			"invite": invite, "state_default": 50, "events_default": 0, "users_default": 0, "x_custom": 1}
	}
	superseded := func(typ string, first, second any) func(ctx context.Context, s *Service, roomID, sender string) (string, error) {
		return func(ctx context.Context, s *Service, roomID, sender string) (string, error) {
			ev, err := s.Send(ctx, roomID, Proto{Sender: sender, Type: typ, StateKey: strptr(""), Content: mustJSON(first)})
			if err != nil {
				return "", err
			}
			_, err = s.Send(ctx, roomID, Proto{Sender: sender, Type: typ, StateKey: strptr(""), Content: mustJSON(second)})
			return ev.EventID, err
		}
	}
	targets := map[string]target{
		"power_levels": {send: superseded("m.room.power_levels", powerLevels(7), powerLevels(0))},
		"join_rules": {send: superseded("m.room.join_rules",
			map[string]any{"join_rule": "public", "allow": []map[string]string{{"type": "m.room_membership", "room_id": "!other:" + testServer}}, "x_custom": 1},
			map[string]any{"join_rule": "public"})},
		"message": {send: func(ctx context.Context, s *Service, roomID, sender string) (string, error) {
			ev, err := s.Send(ctx, roomID, Proto{Sender: sender, Type: "m.room.message", Content: mustJSON(map[string]string{"msgtype": "m.text", "body": "secret"})})
			return ev.EventID, err
		}},
		"redaction": {send: func(ctx context.Context, s *Service, roomID, sender string) (string, error) {
			ev, err := s.Send(ctx, roomID, Proto{Sender: sender, Type: "m.room.message", Content: mustJSON(map[string]string{"body": "x"})})
			if err != nil {
				return "", err
			}
			red, err := s.Redact(ctx, roomID, sender, ev.EventID, "because", nil)
			return red.EventID, err
		}},
	}
	cases := []struct {
		version, target string
		kept, gone      []string
	}{
		{"1", "power_levels", []string{"ban", "users", "redact", "events_default"}, []string{"invite", "x_custom"}},
		{"10", "power_levels", []string{"ban", "users", "redact"}, []string{"invite", "x_custom"}},
		{"11", "power_levels", []string{"ban", "users", "redact", "invite"}, []string{"x_custom"}},
		{"1", "join_rules", []string{"join_rule"}, []string{"allow", "x_custom"}},
		{"10", "join_rules", []string{"join_rule", "allow"}, []string{"x_custom"}},
		{"11", "join_rules", []string{"join_rule", "allow"}, []string{"x_custom"}},
		{"1", "message", nil, []string{"body", "msgtype"}},
		{"11", "message", nil, []string{"body", "msgtype"}},
		{"10", "redaction", nil, []string{"redacts", "reason"}},
		{"11", "redaction", []string{"redacts"}, []string{"reason"}},
	}
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		alice := uid("alice")
		for _, tc := range cases {
			t.Run("v"+tc.version+"/"+tc.target, func(t *testing.T) {
				roomID, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat", RoomVersion: tc.version})
				if err != nil {
					t.Fatalf("CreateRoom(v%s): %v", tc.version, err)
				}
				id, err := targets[tc.target].send(ctx, s, roomID, alice)
				if err != nil {
					t.Fatalf("send %s: %v", tc.target, err)
				}
				before := contentOf(t, s, roomID, alice, id)
				for _, k := range append(tc.kept, tc.gone...) {
					if _, ok := before[k]; !ok {
						t.Fatalf("%s before redaction lacks %q: %v", tc.target, k, before)
					}
				}
				if _, err := s.Redact(ctx, roomID, alice, id, "", nil); err != nil {
					t.Fatalf("Redact(%s): %v", id, err)
				}
				after := contentOf(t, s, roomID, alice, id)
				for _, k := range tc.kept {
					if _, ok := after[k]; !ok {
						t.Errorf("v%s %s redacted: %q removed; want kept (content %v)", tc.version, tc.target, k, after)
					}
				}
				for _, k := range tc.gone {
					if _, ok := after[k]; ok {
						t.Errorf("v%s %s redacted: %q kept; want removed (content %v)", tc.version, tc.target, k, after)
					}
				}
			})
		}
	})
}

// contentOf reads an event through the engine, as a client would see it.
func contentOf(t *testing.T, s *Service, roomID, userID, eventID string) map[string]any {
	t.Helper()
	ev, err := s.Event(context.Background(), roomID, userID, eventID)
	if err != nil {
		t.Fatalf("Event(%s): %v", eventID, err)
	}
	var c map[string]any
	if err := json.Unmarshal(ev.Content, &c); err != nil {
		t.Fatalf("Event(%s) content %s: %v", eventID, ev.Content, err)
	}
	return c
}
