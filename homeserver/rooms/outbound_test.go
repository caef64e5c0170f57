package rooms

import (
	"context"
	"testing"

	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestEventsSince: the stream the federation sender reads, in order from any
// position, paged by limit, with each event's routing facts.
func TestEventsSince(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestService(t, db)
		alice, bob := uid("alice"), uid("bob")
		start, err := s.LatestPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		roomID, err := s.CreateRoom(ctx, alice, CreateRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		join(t, s, roomID, bob)
		msg, err := s.Send(ctx, roomID, Proto{Sender: bob, Type: "m.room.message", Content: mustJSON(map[string]string{"msgtype": "m.text", "body": "hi"})})
		if err != nil {
			t.Fatal(err)
		}
		end, err := s.LatestPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if end != msg.StreamPos {
			t.Fatalf("LatestPosition = %d; want %d, the last event's", end, msg.StreamPos)
		}

		all, err := s.EventsSince(ctx, start, 1000)
		if err != nil {
			t.Fatalf("EventsSince(%d): %v", start, err)
		}
		if len(all) < 3 || all[0].Type != "m.room.create" || all[len(all)-1].EventID != msg.EventID {
			t.Fatalf("EventsSince(%d) = %+v; want the create event first and the message last", start, all)
		}
		var bobJoin, message *OutboundEvent
		for i := range all {
			e := &all[i]
			if i > 0 && e.Pos <= all[i-1].Pos {
				t.Errorf("EventsSince positions %d then %d; want increasing", all[i-1].Pos, e.Pos)
			}
			if e.RoomID != roomID || e.StateReplaced {
				t.Errorf("event %s: room %s, state replaced %v; want %s, false", e.EventID, e.RoomID, e.StateReplaced, roomID)
			}
			if e.Type == "m.room.member" && e.StateKey == bob {
				bobJoin = e
			}
			if e.EventID == msg.EventID {
				message = e
			}
		}
		if bobJoin == nil || !bobJoin.HasStateKey || bobJoin.Membership != "join" || bobJoin.Sender != bob {
			t.Errorf("bob's join = %+v; want state key %s, membership join, sender %s", bobJoin, bob, bob)
		}
		if message.HasStateKey || message.StateKey != "" || message.Membership != "" || message.Sender != bob {
			t.Errorf("message = %+v; want no state key, no membership, sender %s", message, bob)
		}

		// Paging from any position gives the same stream.
		var paged []OutboundEvent
		for pos := start; ; {
			page, err := s.EventsSince(ctx, pos, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 2 {
				t.Fatalf("EventsSince(%d, limit 2) returned %d events", pos, len(page))
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			pos = page[len(page)-1].Pos
		}
		if len(paged) != len(all) {
			t.Errorf("paged by 2: %d events; want %d", len(paged), len(all))
		}
		if rest, err := s.EventsSince(ctx, end, 100); err != nil || len(rest) != 0 {
			t.Errorf("EventsSince(LatestPosition) = %v, %v; want nothing", rest, err)
		}
	})
}
