package clientapi_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

func TestDirectoryContextRelationsReports(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		big := createRoom(t, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Big Lobby", "topic": "everyone", "room_alias_name": "big"})
		small := createRoom(t, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Small talk"})
		createRoom(t, alice, map[string]any{"name": "Hidden"})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+big, map[string]any{}, nil)

		var dir struct {
			Chunk []struct {
				RoomID         string `json:"room_id"`
				Name           string `json:"name"`
				Members        int    `json:"num_joined_members"`
				CanonicalAlias string `json:"canonical_alias"`
			} `json:"chunk"`
			NextBatch string `json:"next_batch"`
			Total     int    `json:"total_room_count_estimate"`
		}
		srv.Client(t).MustDo("GET", "/_matrix/client/v3/publicRooms?limit=1", nil, &dir)
		if dir.Total != 2 || len(dir.Chunk) != 1 || dir.Chunk[0].RoomID != big || dir.Chunk[0].Members != 2 || dir.Chunk[0].CanonicalAlias != "#big:localhost" {
			t.Fatalf("first directory page = %+v; want the big room first of 2", dir)
		}
		srv.Client(t).MustDo("GET", "/_matrix/client/v3/publicRooms?limit=1&since="+dir.NextBatch, nil, &dir)
		if len(dir.Chunk) != 1 || dir.Chunk[0].RoomID != small {
			t.Errorf("second directory page = %+v; want the small room", dir)
		}
		bob.MustDo("POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]string{"generic_search_term": "small"}}, &dir)
		if len(dir.Chunk) != 1 || dir.Chunk[0].Name != "Small talk" {
			t.Errorf("search 'small' = %+v", dir.Chunk)
		}

		var ids []string
		for i := 0; i < 7; i++ {
			ids = append(ids, sendText(t, alice, big, fmt.Sprint("c", i), fmt.Sprint("msg ", i)))
		}
		var cx struct {
			Before []event `json:"events_before"`
			Event  event   `json:"event"`
			After  []event `json:"events_after"`
			State  []event `json:"state"`
			Start  string  `json:"start"`
			End    string  `json:"end"`
		}
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+big+"/context/"+ids[3]+"?limit=4", nil, &cx)
		if cx.Event.EventID != ids[3] || strings.Join(bodies(cx.Before), ",") != "msg 2,msg 1" || strings.Join(bodies(cx.After), ",") != "msg 4,msg 5" {
			t.Errorf("context = before %v, event %s, after %v", bodies(cx.Before), cx.Event.EventID, bodies(cx.After))
		}
		if len(cx.State) == 0 || cx.Start == "" || cx.End == "" {
			t.Errorf("context lacks state or tokens: %d state, start %q, end %q", len(cx.State), cx.Start, cx.End)
		}

		// An edit and two reactions relate to msg 0.
		target := ids[0]
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+big+"/send/m.room.message/edit", map[string]any{
			"msgtype": "m.text", "body": "* msg 0 edited", "m.new_content": map[string]string{"msgtype": "m.text", "body": "msg 0 edited"},
			"m.relates_to": map[string]string{"rel_type": "m.replace", "event_id": target}}, nil)
		for i, key := range []string{"👍", "🎉"} {
			bob.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.reaction/r%d", big, i), map[string]any{
				"m.relates_to": map[string]string{"rel_type": "m.annotation", "event_id": target, "key": key}}, nil)
		}
		var rel struct {
			Chunk     []event `json:"chunk"`
			NextBatch string  `json:"next_batch"`
		}
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+big+"/relations/"+target, nil, &rel)
		if len(rel.Chunk) != 3 {
			t.Errorf("relations = %d events; want 3", len(rel.Chunk))
		}
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+big+"/relations/"+target+"/m.annotation/m.reaction?limit=1", nil, &rel)
		if len(rel.Chunk) != 1 || rel.Chunk[0].Type != "m.reaction" || rel.NextBatch == "" {
			t.Fatalf("annotations page 1 = %+v; want one reaction and a next_batch", rel)
		}
		from := rel.NextBatch
		rel.NextBatch = "" // decoding leaves absent fields alone
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+big+"/relations/"+target+"/m.annotation/m.reaction?limit=5&from="+from, nil, &rel)
		if len(rel.Chunk) != 1 || rel.NextBatch != "" {
			t.Errorf("annotations page 2 = %+v; want the other reaction and no more", rel)
		}

		// The edit is bundled into the original; bob's reactions are not edits.
		var orig event
		bob.MustDo("GET", "/_matrix/client/v3/rooms/"+big+"/event/"+target, nil, &orig)
		replace, _ := orig.Unsigned["m.relations"].(map[string]any)["m.replace"].(map[string]any)
		if replace == nil || replace["content"].(map[string]any)["m.new_content"].(map[string]any)["body"] != "msg 0 edited" {
			t.Errorf("bundled edit = %v; want the edit of msg 0", orig.Unsigned)
		}

		// Threads: replies to msg 1 and msg 2, bob participating only in msg 2's.
		for i, tc := range []struct {
			c    *testserver.Client
			root string
		}{{alice, ids[1]}, {alice, ids[1]}, {bob, ids[2]}} {
			tc.c.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/th%d", big, i), map[string]any{
				"msgtype": "m.text", "body": fmt.Sprint("reply ", i), "m.relates_to": map[string]string{"rel_type": "m.thread", "event_id": tc.root}}, nil)
		}
		var threads struct {
			Chunk []event `json:"chunk"`
		}
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+big+"/threads", nil, &threads)
		if len(threads.Chunk) != 2 || threads.Chunk[0].EventID != ids[2] || threads.Chunk[1].EventID != ids[1] {
			t.Fatalf("threads = %+v; want msg 2's then msg 1's", threads.Chunk)
		}
		summary := threads.Chunk[1].Unsigned["m.relations"].(map[string]any)["m.thread"].(map[string]any)
		if summary["count"] != float64(2) || summary["current_user_participated"] != false {
			t.Errorf("thread summary of msg 1 = %v; want count 2, bob not participating", summary)
		}
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+big+"/threads?include=participated", nil, &threads)
		if len(threads.Chunk) != 1 || threads.Chunk[0].EventID != ids[2] {
			t.Errorf("participated threads = %d; want only msg 2's", len(threads.Chunk))
		}

		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+big+"/report/"+ids[1], map[string]any{"reason": "spam", "score": -100}, nil)
		var reports int
		srv.DB.QueryRow(t.Context(), `SELECT COUNT(*) FROM event_reports WHERE event_id = $1`, ids[1]).Scan(&reports)
		if reports != 1 {
			t.Errorf("stored reports = %d; want 1", reports)
		}

		var ts map[string]any
		now := time.Now().UnixMilli()
		bob.MustDo("GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?dir=b&ts=%d", big, now+1000), nil, &ts)
		if ts["event_id"] == nil {
			t.Errorf("timestamp_to_event = %v", ts)
		}

		for _, tc := range []struct{ path, code string }{
			{"/_matrix/client/v3/publicRooms?since=bogus", "M_INVALID_PARAM"},
			{"/_matrix/client/v3/rooms/" + big + "/context/$nope", "M_NOT_FOUND"},
			{"/_matrix/client/v1/rooms/" + big + "/relations/" + target + "?dir=up", "M_INVALID_PARAM"},
			{"/_matrix/client/v1/rooms/" + big + "/timestamp_to_event?dir=b&ts=soon", "M_INVALID_PARAM"},
			{fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?dir=b&ts=%d", big, 1), "M_NOT_FOUND"},
		} {
			var e errBody
			st, data := bob.Raw("GET", tc.path, nil)
			json.Unmarshal(data, &e)
			if st < 400 || st >= 500 || e.ErrCode != tc.code {
				t.Errorf("GET %s = %d %s; want %s", tc.path, st, e.ErrCode, tc.code)
			}
		}
		var e errBody
		if st := bob.Do("POST", "/_matrix/client/v3/rooms/"+big+"/report/"+ids[1], map[string]any{"score": 7}, &e); st != 400 || e.ErrCode != "M_INVALID_PARAM" {
			t.Errorf("report with score 7 = %d %s; want 400 M_INVALID_PARAM", st, e.ErrCode)
		}
	})
}

func TestSpaceHierarchyAndCanonicalAlias(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		space := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Space", "creation_content": map[string]string{"type": "m.space"}})
		pub := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Public child"})
		secret := createRoom(t, alice, map[string]any{"name": "Secret child"})
		sub := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Grandchild"})
		for _, c := range []struct {
			parent, child string
			suggested     bool
		}{{space, pub, true}, {space, secret, false}, {pub, sub, false}} {
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+c.parent+"/state/m.space.child/"+c.child,
				map[string]any{"via": []string{"localhost"}, "suggested": c.suggested}, nil)
		}
		var h struct {
			Rooms []struct {
				RoomID   string `json:"room_id"`
				Name     string `json:"name"`
				RoomType string `json:"room_type"`
				Children []any  `json:"children_state"`
			} `json:"rooms"`
			NextBatch string `json:"next_batch"`
		}
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+space+"/hierarchy", nil, &h)
		var names []string
		for _, r := range h.Rooms {
			names = append(names, r.Name)
		}
		if strings.Join(names, ",") != "Space,Public child,Grandchild" || h.Rooms[0].RoomType != "m.space" || len(h.Rooms[0].Children) != 2 {
			t.Errorf("hierarchy for bob = %v (type %q); want Space, Public child, Grandchild without the secret room", names, h.Rooms[0].RoomType)
		}
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+space+"/hierarchy?max_depth=1&limit=1", nil, &h)
		if len(h.Rooms) != 1 || h.NextBatch == "" {
			t.Fatalf("limit 1 = %d rooms, next %q", len(h.Rooms), h.NextBatch)
		}
		next := h.NextBatch
		h.NextBatch = ""
		bob.MustDo("GET", "/_matrix/client/v1/rooms/"+space+"/hierarchy?max_depth=1&from="+next, nil, &h)
		if len(h.Rooms) != 1 || h.Rooms[0].RoomID != pub || h.NextBatch != "" {
			t.Errorf("max_depth 1, page 2 = %+v; want only the public child", h.Rooms)
		}
		alice.MustDo("GET", "/_matrix/client/v1/rooms/"+space+"/hierarchy?suggested_only=true", nil, &h)
		if len(h.Rooms) != 2 || h.Rooms[1].RoomID != pub {
			t.Errorf("suggested only = %d rooms; want the space and its suggested child (the grandchild is not suggested)", len(h.Rooms))
		}

		// Canonical aliases must point at the room.
		alice.MustDo("PUT", "/_matrix/client/v3/directory/room/%23mine:localhost", map[string]string{"room_id": pub}, nil)
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+pub+"/state/m.room.canonical_alias", map[string]string{"alias": "#mine:localhost"}, nil)
		var e errBody
		if st := alice.Do("PUT", "/_matrix/client/v3/rooms/"+secret+"/state/m.room.canonical_alias", map[string]string{"alias": "#mine:localhost"}, &e); st != 400 || e.ErrCode != "M_BAD_ALIAS" {
			t.Errorf("canonical alias of another room = %d %s; want 400 M_BAD_ALIAS", st, e.ErrCode)
		}
	})
}

func TestTagsAndUserDirectory(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		srv.Register(t, "hermit", "pw") // shares no room with anyone
		bob.MustDo("PUT", "/_matrix/client/v3/profile/@bob:localhost/displayname", map[string]string{"displayname": "Bobby Tables"}, nil)
		roomID := createRoom(t, alice, map[string]any{"invite": []string{"@bob:localhost"}})
		bob.MustDo("POST", "/_matrix/client/v3/join/"+roomID, map[string]any{}, nil)

		tagPath := "/_matrix/client/v3/user/@alice:localhost/rooms/" + roomID + "/tags"
		alice.MustDo("PUT", tagPath+"/m.favourite", map[string]any{"order": 0.25}, nil)
		alice.MustDo("PUT", tagPath+"/u.work", map[string]any{}, nil)
		alice.MustDo("DELETE", tagPath+"/u.work", nil, nil)
		var tags struct {
			Tags map[string]map[string]any `json:"tags"`
		}
		alice.MustDo("GET", tagPath, nil, &tags)
		if len(tags.Tags) != 1 || tags.Tags["m.favourite"]["order"] != 0.25 {
			t.Errorf("tags = %v; want m.favourite with order 0.25", tags.Tags)
		}
		var e errBody
		if st := alice.Do("PUT", tagPath+"/x", map[string]any{"order": 7}, &e); st != 400 || e.ErrCode != "M_INVALID_PARAM" {
			t.Errorf("order 7 = %d %s; want 400 M_INVALID_PARAM", st, e.ErrCode)
		}

		var res struct {
			Results []struct {
				UserID      string `json:"user_id"`
				DisplayName string `json:"display_name"`
			} `json:"results"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/user_directory/search", map[string]string{"search_term": "tables"}, &res)
		if len(res.Results) != 1 || res.Results[0].UserID != "@bob:localhost" || res.Results[0].DisplayName != "Bobby Tables" {
			t.Errorf("search 'tables' = %+v; want bob", res.Results)
		}
		alice.MustDo("POST", "/_matrix/client/v3/user_directory/search", map[string]string{"search_term": "hermit"}, &res)
		if len(res.Results) != 0 {
			t.Errorf("search 'hermit' = %+v; want nobody (no shared or public room)", res.Results)
		}
		if st := alice.Do("POST", "/_matrix/client/v3/user_directory/search", map[string]string{}, &e); st != 400 || e.ErrCode != "M_MISSING_PARAM" {
			t.Errorf("search without a term = %d %s", st, e.ErrCode)
		}
	})
}
