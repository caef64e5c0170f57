package rooms

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// powerLevels is the power levels content of the room TestPowerLevels plays in: every
// threshold different, so that a check against the wrong one shows.
func powerLevels(users map[string]int64, usersDefault int64) map[string]any {
	return map[string]any{
		"users": users, "users_default": usersDefault,
		"events_default": 10, "state_default": 50,
		"ban": 60, "kick": 40, "redact": 30, "invite": 20,
		"events": map[string]int64{"m.room.name": 70, "org.example.low": 0},
	}
}

// TestPowerLevels walks one room through writes by users of every rank and checks
// each is allowed or refused with M_FORBIDDEN by the threshold that governs it. A
// refused write must leave the room as it was.
func TestPowerLevels(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		alice, mod, helper, carol, dave, frank := uid("alice"), uid("mod"), uid("helper"), uid("carol"), uid("dave"), uid("frank")
		users := map[string]int64{alice: 100, mod: 50, helper: 25}
		roomID, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat",
			PowerLevelContentOverride: rawJSON(t, powerLevels(users, 5))})
		if err != nil {
			t.Fatalf("CreateRoom: %v", err)
		}
		join(t, s, roomID, mod, helper, carol, dave)

		send := func(sender, typ string, content any) func() (Sent, error) {
			return func() (Sent, error) {
				return s.Send(ctx, roomID, Proto{Sender: sender, Type: typ, Content: rawJSON(t, content)})
			}
		}
		state := func(sender, typ string, content any) func() (Sent, error) {
			return func() (Sent, error) {
				return s.Send(ctx, roomID, Proto{Sender: sender, Type: typ, StateKey: strptr(""), Content: rawJSON(t, content)})
			}
		}
		member := func(sender, target, membership string) func() (Sent, error) {
			return func() (Sent, error) {
				return s.SetMembership(ctx, roomID, Membership{Sender: sender, Target: target, Membership: membership})
			}
		}
		msg := map[string]string{"msgtype": "m.text", "body": "hello"}
		// Events sent by earlier steps that later steps redact.
		sent := map[string]string{}
		keep := func(name string, f func() (Sent, error)) func() (Sent, error) {
			return func() (Sent, error) {
				r, err := f()
				sent[name] = r.EventID
				return r, err
			}
		}
		redact := func(sender, name string) func() (Sent, error) {
			return func() (Sent, error) { return s.Redact(ctx, roomID, sender, sent[name], "", nil) }
		}
		raised := map[string]int64{alice: 100, mod: 50, helper: 60}
		lifted := map[string]int64{alice: 100, mod: 50, helper: 40}

		steps := []struct {
			name string
			do   func() (Sent, error)
			want mxerror.Code
		}{
			{"users_default below events_default sends message", send(carol, "m.room.message", msg), mxerror.Forbidden},
			{"above events_default sends message", keep("helper msg", send(helper, "m.room.message", msg)), ""},
			{"events override below users_default", keep("carol low", send(carol, "org.example.low", msg)), ""},
			{"below state_default sends state", state(helper, "org.example.state", map[string]int{"n": 1}), mxerror.Forbidden},
			{"at state_default sends state", state(mod, "org.example.state", map[string]int{"n": 1}), ""},
			{"below events override sends m.room.name", state(mod, "m.room.name", map[string]string{"name": "x"}), mxerror.Forbidden},
			{"above events override sends m.room.name", state(alice, "m.room.name", map[string]string{"name": "x"}), ""},
			{"user raises own level", state(helper, "m.room.power_levels", powerLevels(map[string]int64{alice: 100, mod: 50, helper: 100}, 5)), mxerror.Forbidden},
			{"mod grants more than own level", state(mod, "m.room.power_levels", powerLevels(raised, 5)), mxerror.Forbidden},
			{"mod demotes admin", state(mod, "m.room.power_levels", powerLevels(map[string]int64{alice: 0, mod: 50, helper: 25}, 5)), mxerror.Forbidden},
			{"below invite level invites", member(carol, frank, "invite"), mxerror.Forbidden},
			{"at invite level invites", member(helper, frank, "invite"), ""},
			{"below kick level kicks", member(helper, carol, "kick"), mxerror.Forbidden},
			{"at kick level kicks higher user", member(mod, alice, "kick"), mxerror.Forbidden},
			{"at kick level kicks", member(mod, carol, "kick"), ""},
			{"below ban level bans", member(mod, dave, "ban"), mxerror.Forbidden},
			{"at ban level bans", member(alice, dave, "ban"), ""},
			{"banned user joins", member(dave, dave, "join"), mxerror.Forbidden},
			{"below ban level unbans", member(mod, dave, "unban"), mxerror.Forbidden},
			{"at ban level unbans", member(alice, dave, "unban"), ""},
			{"below redact level redacts another's event", redact(helper, "carol low"), mxerror.Forbidden},
			{"below redact level redacts own event", redact(helper, "helper msg"), ""},
			{"at redact level redacts another's event", redact(mod, "carol low"), ""},
			{"mod grants up to own level", state(mod, "m.room.power_levels", powerLevels(lifted, 5)), ""},
			{"raised users_default lets a plain user send", state(alice, "m.room.power_levels", powerLevels(lifted, 10)), ""},
			{"unbanned user joins again", member(dave, dave, "join"), ""},
			{"plain user sends at events_default", send(dave, "m.room.message", msg), ""},
		}
		for _, st := range steps {
			before, err := s.LatestPosition(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = st.do()
			if got := codeOf(err); got != st.want {
				t.Errorf("%s: error %q (%v); want %q", st.name, got, err, st.want)
				continue
			}
			if st.want != "" {
				if after, _ := s.LatestPosition(ctx); after != before {
					t.Errorf("%s: refused, but the stream moved from %d to %d", st.name, before, after)
				}
			}
		}

		// The refused redaction left carol's event whole until the moderator's; the
		// redactions that passed stripped their targets' content.
		for name, wantEmpty := range map[string]bool{"carol low": true, "helper msg": true} {
			ev, err := s.Event(ctx, roomID, alice, sent[name])
			if err != nil {
				t.Fatalf("Event(%s): %v", name, err)
			}
			var c map[string]any
			if err := json.Unmarshal(ev.Content, &c); err != nil {
				t.Fatal(err)
			}
			if (len(c) == 0) != wantEmpty {
				t.Errorf("Event(%s).Content = %s; want empty %v", name, ev.Content, wantEmpty)
			}
		}
	})
}

// TestRedactForbiddenKeepsContent: a redaction refused for lack of power leaves the
// target's content in place (the refusal is not just an error on the way out).
func TestRedactForbiddenKeepsContent(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		alice, bob := uid("alice"), uid("bob")
		roomID, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		join(t, s, roomID, bob)
		ev, err := s.Send(ctx, roomID, Proto{Sender: alice, Type: "m.room.message", Content: rawJSON(t, map[string]string{"body": "mine"})})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Redact(ctx, roomID, bob, ev.EventID, "", nil); codeOf(err) != mxerror.Forbidden {
			t.Fatalf("Redact(bob, alice's event) = %v; want M_FORBIDDEN", err)
		}
		got, err := s.Event(ctx, roomID, bob, ev.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Content) != `{"body":"mine"}` || got.Unsigned["redacted_because"] != nil {
			t.Errorf("after refused redaction: content %s, unsigned %v; want the original, unredacted", got.Content, got.Unsigned)
		}
	})
}
