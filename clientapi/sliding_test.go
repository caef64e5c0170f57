package clientapi_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

type slidingResp struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
		Ops   []struct {
			Op      string   `json:"op"`
			Range   []int    `json:"range"`
			RoomIDs []string `json:"room_ids"`
		} `json:"ops"`
	} `json:"lists"`
	Rooms map[string]struct {
		Name          string  `json:"name"`
		Initial       bool    `json:"initial"`
		IsDM          bool    `json:"is_dm"`
		RequiredState []event `json:"required_state"`
		Timeline      []event `json:"timeline"`
		InviteState   []event `json:"invite_state"`
		Limited       bool    `json:"limited"`
		PrevBatch     string  `json:"prev_batch"`
		NumLive       int     `json:"num_live"`
		BumpStamp     int64   `json:"bump_stamp"`
		JoinedCount   int     `json:"joined_count"`
		Heroes        []struct {
			UserID      string `json:"user_id"`
			DisplayName string `json:"displayname"`
		} `json:"heroes"`
	} `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string            `json:"next_batch"`
			Events    []json.RawMessage `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			DeviceOneTimeKeysCount map[string]int `json:"device_one_time_keys_count"`
			DeviceLists            struct {
				Changed []string `json:"changed"`
				Left    []string `json:"left"`
			} `json:"device_lists"`
		} `json:"e2ee"`
		AccountData *struct {
			Global []event            `json:"global"`
			Rooms  map[string][]event `json:"rooms"`
		} `json:"account_data"`
		Receipts *struct {
			Rooms map[string]event `json:"rooms"`
		} `json:"receipts"`
		Typing *struct {
			Rooms map[string]event `json:"rooms"`
		} `json:"typing"`
	} `json:"extensions"`
}

// elementXRoomList is shaped like the room list request of Element X (matrix-rust-sdk):
// a recency window with little state and one timeline event per room, and the
// extensions it enables.
func elementXRoomList(end int) map[string]any {
	return map[string]any{
		"conn_id": "room-list",
		"lists": map[string]any{
			"all_rooms": map[string]any{
				"ranges": [][]int{{0, end}},
				"required_state": [][]string{
					{"m.room.encryption", ""}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"},
					{"m.room.name", ""}, {"m.room.canonical_alias", ""}, {"m.room.power_levels", ""},
					{"m.room.create", ""}, {"m.room.avatar", ""}, {"m.room.topic", ""}, {"m.room.join_rules", ""},
					{"m.room.history_visibility", ""}, {"m.room.tombstone", ""},
				},
				"timeline_limit": 1,
				"filters":        map[string]any{"not_room_types": []string{"m.space"}},
			},
		},
		"extensions": map[string]any{
			"account_data": map[string]any{"enabled": true},
			"receipts":     map[string]any{"enabled": true, "rooms": []string{"*"}},
			"typing":       map[string]any{"enabled": true},
			"to_device":    map[string]any{"enabled": true},
			"e2ee":         map[string]any{"enabled": true},
		},
	}
}

func sliding(t *testing.T, c *testserver.Client, query string, body any) slidingResp {
	t.Helper()
	var out slidingResp
	c.MustDo("POST", slidingPath+query, body, &out)
	return out
}

func stateTypes(events []event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Type+"|"+*e.StateKey)
	}
	slices.Sort(out)
	return out
}

func TestSlidingSyncElementXRoomList(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		named := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Named"})
		dm := createRoom(t, alice, map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID}})
		space := createRoom(t, alice, map[string]any{"creation_content": map[string]any{"type": "m.space"}, "name": "Space"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+named, map[string]any{}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+dm, map[string]any{}, nil)
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+space+"/invite", map[string]any{"user_id": bob.UserID}, nil)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+space, map[string]any{}, nil)
		bob.MustDo("PUT", "/_matrix/client/v3/user/"+bob.UserID+"/account_data/m.direct", map[string][]string{alice.UserID: {dm}}, nil)
		sendText(t, alice, named, "n1", "older")
		sendText(t, alice, dm, "d1", "newer")
		invited := createRoom(t, alice, map[string]any{"name": "Invite", "invite": []string{bob.UserID}})

		first := sliding(t, bob, "", elementXRoomList(19))
		list := first.Lists["all_rooms"]
		if list.Count != 3 {
			t.Fatalf("count = %d; want 3 (the space is filtered out): %+v", list.Count, list)
		}
		// Most recent first: the invite, then the DM's message, then the older one.
		if want := []string{invited, dm, named}; len(list.Ops) != 1 || !slices.Equal(list.Ops[0].RoomIDs, want) {
			t.Errorf("ops = %+v; want one SYNC of %v", list.Ops, want)
		}
		if _, ok := first.Rooms[space]; ok {
			t.Errorf("the filtered-out space was sent")
		}
		n := first.Rooms[named]
		if !n.Initial || n.Name != "Named" || n.JoinedCount != 2 || len(n.Timeline) != 1 || bodies(n.Timeline)[0] != "older" {
			t.Errorf("named room = %+v; want initial, named, 2 joined, the last message", n)
		}
		if got := stateTypes(n.RequiredState); !slices.Contains(got, "m.room.name|") || !slices.Contains(got, "m.room.member|"+bob.UserID) ||
			!slices.Contains(got, "m.room.member|"+alice.UserID) || slices.Contains(got, "m.room.join_rules|x") {
			t.Errorf("named room required_state = %v; want name, $ME and the $LAZY sender", got)
		}
		for _, typ := range stateTypes(n.RequiredState) {
			if typ == "m.room.guest_access|" {
				t.Errorf("required_state has unrequested %s", typ)
			}
		}
		d := first.Rooms[dm]
		if !d.IsDM || d.Name != "" || len(d.Heroes) != 1 || d.Heroes[0].UserID != alice.UserID || d.Heroes[0].DisplayName != "alice" {
			t.Errorf("dm = %+v; want is_dm, no name, alice as the hero", d)
		}
		if d.BumpStamp <= n.BumpStamp {
			t.Errorf("bump stamps dm %d <= named %d; want the newer message to bump higher", d.BumpStamp, n.BumpStamp)
		}
		inv := first.Rooms[invited]
		if len(inv.InviteState) == 0 || inv.Name != "Invite" || len(inv.Timeline) != 0 {
			t.Errorf("invite = %+v; want stripped state and a name, no timeline", inv)
		}
		if first.Extensions.AccountData == nil || !slices.ContainsFunc(first.Extensions.AccountData.Global, func(e event) bool { return e.Type == "m.direct" }) {
			t.Errorf("account_data extension = %+v; want m.direct", first.Extensions.AccountData)
		}
		if first.Extensions.E2EE == nil || first.Extensions.ToDevice == nil {
			t.Errorf("e2ee/to_device extensions missing: %+v", first.Extensions)
		}

		// Incremental: the older room gets a message and moves to the top; only it
		// is sent, with just the new event, counted as live.
		done := make(chan slidingResp)
		go func() { done <- sliding(t, bob, "?timeout=10000&pos="+first.Pos, elementXRoomList(19)) }()
		time.Sleep(100 * time.Millisecond)
		sent := time.Now()
		sendText(t, alice, named, "n2", "bump")
		var second slidingResp
		select {
		case second = <-done:
		case <-time.After(8 * time.Second):
			t.Fatal("long-poll did not wake for a new message")
		}
		t.Logf("long-poll woke %v after the send", time.Since(sent))
		if len(second.Rooms) != 1 {
			t.Fatalf("incremental rooms = %v; want only the named room", keys(second.Rooms))
		}
		n2 := second.Rooms[named]
		if n2.Initial || bodies(n2.Timeline)[0] != "bump" || len(n2.Timeline) != 1 || n2.NumLive != 1 {
			t.Errorf("incremental named = %+v; want the new message only, num_live 1", n2)
		}
		if ops := second.Lists["all_rooms"].Ops; len(ops) != 1 || ops[0].RoomIDs[0] != named {
			t.Errorf("after the bump ops = %+v; want the named room first", ops)
		}

		// Nothing changed: the poll waits out its timeout and sends no rooms.
		quiet := sliding(t, bob, "?timeout=200&pos="+second.Pos, elementXRoomList(19))
		if len(quiet.Rooms) != 0 {
			t.Errorf("quiet poll sent rooms %v", keys(quiet.Rooms))
		}

		// A retried request with an older pos gets the same delta again.
		retry := sliding(t, bob, "?pos="+first.Pos, elementXRoomList(19))
		if r := retry.Rooms[named]; len(r.Timeline) != 1 || bodies(r.Timeline)[0] != "bump" {
			t.Errorf("retry with the previous pos = %+v; want the bump again", r)
		}

		// Joining the invite sends that room whole.
		bob.MustDo("POST", "/_matrix/client/v3/join/"+invited, map[string]any{}, nil)
		joined := sliding(t, bob, "?timeout=5000&pos="+quiet.Pos, elementXRoomList(19))
		if j := joined.Rooms[invited]; !j.Initial || len(j.InviteState) != 0 || len(j.Timeline) != 1 || j.Name != "Invite" {
			t.Errorf("joined invite = %+v; want the room sent whole", j)
		}

		// Leaving: the leave is sent once, then the room drops out of the list.
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+named+"/leave", map[string]any{}, nil)
		left := sliding(t, bob, "?timeout=5000&pos="+joined.Pos, elementXRoomList(19))
		l := left.Rooms[named]
		if len(l.Timeline) != 1 || l.Timeline[0].Type != "m.room.member" || l.Timeline[0].Content["membership"] != "leave" {
			t.Errorf("after leaving, room = %+v; want the leave", l)
		}
		sendText(t, alice, named, "n3", "after leave")
		gone := sliding(t, bob, "?timeout=300&pos="+left.Pos, elementXRoomList(19))
		if _, ok := gone.Rooms[named]; ok || gone.Lists["all_rooms"].Count != 2 {
			t.Errorf("after the leave was sent: rooms %v, count %d; want the room gone", keys(gone.Rooms), gone.Lists["all_rooms"].Count)
		}
	})
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestSlidingSyncSubscriptionsAndExtensions(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		roomID := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Chat"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)
		for i := range 30 {
			sendText(t, alice, roomID, "t"+string(rune('a'+i)), "m"+string(rune('a'+i)))
		}
		// Opening a room: a subscription with a longer timeline and all members.
		sub := map[string]any{
			"conn_id": "room",
			"room_subscriptions": map[string]any{roomID: map[string]any{
				"required_state": [][]string{{"*", "*"}}, "timeline_limit": 20,
			}},
			"extensions": map[string]any{
				"to_device": map[string]any{"enabled": true},
				"receipts":  map[string]any{"enabled": true},
				"typing":    map[string]any{"enabled": true},
			},
		}
		first := sliding(t, bob, "", sub)
		r := first.Rooms[roomID]
		if len(r.Timeline) != 20 || !r.Limited || r.PrevBatch == "" {
			t.Fatalf("subscription timeline = %d events, limited %v, prev_batch %q; want 20, true, a token", len(r.Timeline), r.Limited, r.PrevBatch)
		}
		// The prev_batch paginates to the rest.
		older, _ := messages(t, bob, roomID, "dir=b&limit=100&from="+r.PrevBatch)
		if got := len(bodies(older)); got != 10 {
			t.Errorf("paginating from prev_batch gave %d messages; want the 10 older ones", got)
		}
		if got := stateTypes(r.RequiredState); !slices.Contains(got, "m.room.join_rules|") || !slices.Contains(got, "m.room.member|"+alice.UserID) {
			t.Errorf("required_state * * = %v; want all state", got)
		}

		// Typing, a receipt and a to-device message arrive through the extensions.
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.UserID, map[string]any{"typing": true, "timeout": 30000}, nil)
		last := r.Timeline[len(r.Timeline)-1].EventID
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+last, map[string]any{}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", map[string]any{
			"messages": map[string]any{bob.UserID: map[string]any{bob.Device: map[string]string{"hello": "bob"}}},
		}, nil)
		var got slidingResp
		pos := first.Pos
		deadline := time.Now().Add(5 * time.Second)
		var typing, receipt bool
		var toDevice int
		var toDeviceSince string
		for time.Now().Before(deadline) && !(typing && receipt && toDevice > 0) {
			got = sliding(t, bob, "?timeout=1000&pos="+pos, sub)
			pos = got.Pos
			if ty, ok := got.Extensions.Typing.Rooms[roomID]; ok && slices.Contains(ty.Content["user_ids"].([]any), any(alice.UserID)) {
				typing = true
			}
			if _, ok := got.Extensions.Receipts.Rooms[roomID]; ok {
				receipt = true
			}
			toDevice += len(got.Extensions.ToDevice.Events)
			toDeviceSince = got.Extensions.ToDevice.NextBatch
		}
		if !typing || !receipt || toDevice != 1 {
			t.Fatalf("extensions: typing %v, receipt %v, to-device %d; want all, one message", typing, receipt, toDevice)
		}
		// Acknowledged by the to_device since: not delivered again.
		sub["extensions"].(map[string]any)["to_device"] = map[string]any{"enabled": true, "since": toDeviceSince}
		again := sliding(t, bob, "?pos="+pos, sub)
		if n := len(again.Extensions.ToDevice.Events); n != 0 {
			t.Errorf("to-device delivered again after the ack: %d", n)
		}
	})
}

func TestSlidingSyncBadInput(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		bob := srv.Register(t, "bob", "pw")
		for _, tc := range []struct {
			name, query string
			body        any
			status      int
			errcode     string
		}{
			{"unknown pos", "?pos=nonsense_1", map[string]any{}, 400, "M_UNKNOWN_POS"},
			{"pos of another process", "?pos=0123456789ab_1", map[string]any{}, 400, "M_UNKNOWN_POS"},
			{"not json", "", "{nope", 400, "M_NOT_JSON"},
			{"wrong type", "", map[string]any{"lists": []int{1}}, 400, "M_BAD_JSON"},
			{"bad range", "", map[string]any{"lists": map[string]any{"a": map[string]any{"ranges": [][]int{{5, 1}}}}}, 400, "M_INVALID_PARAM"},
			{"short range", "", map[string]any{"lists": map[string]any{"a": map[string]any{"ranges": [][]int{{5}}}}}, 400, "M_INVALID_PARAM"},
			{"bad required_state", "", map[string]any{"room_subscriptions": map[string]any{"!a:b": map[string]any{"required_state": [][]string{{"x"}}}}}, 400, "M_INVALID_PARAM"},
			{"negative timeline", "", map[string]any{"room_subscriptions": map[string]any{"!a:b": map[string]any{"timeline_limit": -1}}}, 400, "M_INVALID_PARAM"},
			{"bad timeout", "?timeout=soon", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"bad to_device since", "", map[string]any{"extensions": map[string]any{"to_device": map[string]any{"enabled": true, "since": "x"}}}, 400, "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var e errBody
				if status := bob.Do("POST", slidingPath+tc.query, tc.body, &e); status != tc.status || e.ErrCode != tc.errcode {
					t.Errorf("status %d %s; want %d %s", status, e.ErrCode, tc.status, tc.errcode)
				}
			})
		}
		// A subscription to a room the user is not in is ignored, not an error.
		out := sliding(t, bob, "", map[string]any{"room_subscriptions": map[string]any{"!nowhere:localhost": map[string]any{"timeline_limit": 5}}})
		if len(out.Rooms) != 0 || out.Pos == "" {
			t.Errorf("subscription to a foreign room = %+v", out)
		}
	})
}
