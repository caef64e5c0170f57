package search

import (
	"context"
	"testing"

	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

// TestDocOf: only the three text fields are indexed; encrypted events and
// events without text never are.
func TestDocOf(t *testing.T) {
	for _, tc := range []struct {
		typ, json, key string
	}{
		{"m.room.message", `{"content":{"body":"hi"}}`, "content.body"},
		{"m.room.name", `{"content":{"name":"hall"}}`, "content.name"},
		{"m.room.topic", `{"content":{"topic":"talk"}}`, "content.topic"},
		{"m.room.encrypted", `{"content":{"body":"hi","ciphertext":"x"}}`, ""},
		{"m.room.message", `{"content":{"body":5}}`, ""},
		{"m.room.message", `{"content":{}}`, ""},
		{"m.reaction", `{"content":{"body":"hi"}}`, ""},
	} {
		d, ok := DocOf(rooms.IndexEvent{Type: tc.typ, JSON: tc.json})
		if ok != (tc.key != "") || d.Key != tc.key {
			t.Errorf("DocOf(%s %s) = %q, %v; want %q", tc.typ, tc.json, d.Key, ok, tc.key)
		}
	}
}

// TestIndexWriter: Insert is idempotent, Remove takes an event out, and search
// syntax in a term is matched as text, never parsed, on both engines.
func TestIndexWriter(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(Deps{DB: db})
		docs := []Doc{
			{Pos: 1, EventID: "$a", RoomID: "!r", Sender: "@u", Key: "content.body", Text: "Quick brown foxes"},
			{Pos: 2, EventID: "$b", RoomID: "!r", Sender: "@v", Key: "content.body", Text: "a lazy dog"},
			{Pos: 3, EventID: "$c", RoomID: "!other", Sender: "@u", Key: "content.body", Text: "another fox"},
		}
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			for _, d := range append(docs, docs[0]) {
				if err := Insert(ctx, tx, d); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		find := func(term string, q Query) []string {
			t.Helper()
			where, args := s.where(q, Words(term), []string{"!r", "!other"})
			cands, err := s.candidates(ctx, false, where, args, 10, 0, 0)
			if err != nil {
				t.Fatalf("search %q: %v", term, err)
			}
			var ids []string
			for _, c := range cands {
				ids = append(ids, c.id)
			}
			return ids
		}
		if got := find("fox", Query{}); len(got) != 2 {
			t.Errorf("fox (stemmed) = %v; want $a and $c", got)
		}
		if got := find("fox", Query{Senders: []string{"@u"}, NotSenders: []string{"@v"}, Keys: []string{"content.body"}}); len(got) != 2 {
			t.Errorf("fox by @u = %v; want 2", got)
		}
		if got := find(`"dog" OR NEAR( *`, Query{}); len(got) != 0 {
			t.Errorf("syntax as text = %v; want none (every word must match)", got)
		}
		if got := find("dog", Query{}); len(got) != 1 || got[0] != "$b" {
			t.Errorf("dog = %v; want [$b]", got)
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return Remove(ctx, tx, "$b") }); err != nil {
			t.Fatal(err)
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error { return Remove(ctx, tx, "$unknown") }); err != nil {
			t.Fatalf("removing an unindexed event: %v", err)
		}
		if got := find("dog", Query{}); len(got) != 0 {
			t.Errorf("dog after Remove = %v; want none", got)
		}
	})
}
