package push

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// room10k is a 10 000-member room: 9 900 members on the defaults, 100 with a
// keyword rule of their own, each with a display name.
func room10k() []target {
	sets := map[string]*compiled{}
	targets := make([]target, 0, 10_000)
	for i := range 10_000 {
		u := fmt.Sprintf("@user%05d:example.org", i)
		rs := Defaults(u)
		if i%100 == 0 {
			rs.Content = append([]Rule{{RuleID: "kw", Enabled: true, Pattern: fmt.Sprintf("topic%d", i),
				Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}}, rs.Content...)
		}
		c, key := compileFor(rs, u)
		if shared, ok := sets[key]; ok {
			c = shared
		} else {
			sets[key] = c
		}
		targets = append(targets, target{owner: newOwner(u, fmt.Sprintf("User %d", i)), set: c})
	}
	return targets
}

// BenchmarkEvaluateRoom10k is the evaluator's CPU cost for one event in a
// 10 000-member room: every member's rules, grouped by distinct ruleset (the
// storage of the notifications is BenchmarkStoreNotifications10k).
func BenchmarkEvaluateRoom10k(b *testing.B) {
	targets := room10k()
	room := &Room{MemberCount: len(targets), NotificationLevels: map[string]int64{"room": 50}}
	for _, tc := range []struct{ name, event string }{
		{"message", `{"type":"m.room.message","sender":"@user00001:example.org","room_id":"!r:example.org","content":{"msgtype":"m.text","body":"Hello everyone, the release is out today"}}`},
		{"mention", `{"type":"m.room.message","sender":"@user00001:example.org","room_id":"!r:example.org","content":{"msgtype":"m.text","body":"User 42: look","m.mentions":{"user_ids":["@user00042:example.org"]}}}`},
		{"encrypted", `{"type":"m.room.encrypted","sender":"@user00001:example.org","room_id":"!r:example.org","content":{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgAEpAB"}}`},
		{"reaction", `{"type":"m.reaction","sender":"@user00001:example.org","room_id":"!r:example.org","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍"}}}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			notified := 0
			for b.Loop() {
				ev, err := ParseEvent([]byte(tc.event))
				if err != nil {
					b.Fatal(err)
				}
				notified = 0
				evaluateMany(ev, room, targets, func(*target, Outcome) { notified++ })
			}
			b.ReportMetric(float64(notified), "notified/event")
		})
	}
}

// BenchmarkStoreNotifications10k is the write that follows: 10 000 notification
// rows for one event in one transaction, as the evaluator stores them.
func BenchmarkStoreNotifications10k(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			db, err := storage.Open(context.Background(), storagetest.DSN(b, d), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Migrate(context.Background()); err != nil {
				b.Fatal(err)
			}
			ds := make([]decided, 10_000)
			actions := []json.RawMessage{json.RawMessage(`"notify"`)}
			for i := range ds {
				ds[i] = decided{eventPos: 1, n: Notification{UserID: fmt.Sprintf("@user%05d:example.org", i), RoomID: "!r:example.org",
					EventID: "$e", TS: 1, Actions: actions}}
			}
			ctx := context.Background()
			for b.Loop() {
				err := db.WithTx(ctx, func(tx *storage.Tx) error {
					first, err := tx.NextStreamPositions(ctx, "push_notifications", int64(len(ds)))
					if err != nil {
						return err
					}
					return insertNotifications(ctx, tx, first, ds)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStoreShared10k is the same event stored as the evaluator stores it
// now in a 10 000-member room where 100 members are mentioned: the room's shared
// row plus 100 rows of their own.
func BenchmarkStoreShared10k(b *testing.B) {
	for _, d := range storagetest.Engines() {
		b.Run(string(d), func(b *testing.B) {
			db, err := storage.Open(context.Background(), storagetest.DSN(b, d), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Migrate(context.Background()); err != nil {
				b.Fatal(err)
			}
			actions := []json.RawMessage{json.RawMessage(`"notify"`)}
			highlight := []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight"}`)}
			ds := []decided{{eventPos: 1, shared: true, sender: "@s:example.org", n: Notification{RoomID: "!r:example.org", EventID: "$e", TS: 1, Actions: actions}}}
			for i := range 100 {
				ds = append(ds, decided{eventPos: 1, n: Notification{UserID: fmt.Sprintf("@user%05d:example.org", i), RoomID: "!r:example.org",
					EventID: "$e", TS: 1, Actions: highlight, Highlight: true}})
			}
			ctx := context.Background()
			for b.Loop() {
				err := db.WithTx(ctx, func(tx *storage.Tx) error {
					first, err := tx.NextStreamPositions(ctx, "push_notifications", int64(len(ds)))
					if err != nil {
						return err
					}
					return insertNotifications(ctx, tx, first, ds)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
