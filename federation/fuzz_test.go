package federation

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// fuzzVersions are the room versions the PDU fuzzer parses with; a byte of the
// input picks one.
var fuzzVersions = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV3, gomatrixserverlib.RoomVersionV6,
	gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12,
}

// seedPDU is a signed message event of a room of version v, as another server
// would send it.
func seedPDU(t testing.TB, v gomatrixserverlib.RoomVersion) []byte {
	t.Helper()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	verImpl := gomatrixserverlib.MustGetRoomVersion(v)
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: "@alice:remote.example", RoomID: "!room:remote.example", Type: "m.room.message",
		PrevEvents: []string{"$prev"}, AuthEvents: []string{"$create"}, Depth: 3,
		Content: spec.RawJSON(`{"msgtype":"m.text","body":"hello"}`),
	}
	if v == gomatrixserverlib.RoomVersionV1 {
		proto.PrevEvents = []any{[]any{"$prev:remote.example", map[string]string{"sha256": "abc"}}}
		proto.AuthEvents = []any{[]any{"$create:remote.example", map[string]string{"sha256": "abc"}}}
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.UnixMilli(1_700_000_000_000), "remote.example", "ed25519:a", key)
	if err != nil {
		t.Fatalf("build a seed event of room version %s: %v", v, err)
	}
	return ev.JSON()
}

// FuzzTransaction feeds /send bodies to the decoder federation runs before it
// looks anything up: the transaction, then each PDU as the room version of the
// room it names would parse it. It must never panic, and what it accepts must
// hold the transaction limits.
func FuzzTransaction(f *testing.F) {
	pdu := seedPDU(f, gomatrixserverlib.RoomVersionV10)
	txn, _ := json.Marshal(map[string]any{
		"origin": "remote.example", "origin_server_ts": 1, "pdus": []json.RawMessage{pdu},
		"edus": []any{map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": "!room:remote.example", "user_id": "@alice:remote.example", "typing": true}}},
	})
	f.Add(txn)
	f.Add([]byte(`{"pdus":[],"edus":[]}`))
	f.Add([]byte(`{"pdus":[{"room_id":"!r:x","room_id":"!s:x"}]}`))
	f.Add([]byte(`{"edus":[{"edu_type":"m.presence","content":{"push":[{"user_id":"@a:x","presence":"online"}]}}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		txn, err := decodeTransaction(body)
		if err != nil {
			return
		}
		if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
			t.Fatalf("decodeTransaction accepted %d PDUs and %d EDUs", len(txn.PDUs), len(txn.EDUs))
		}
		for i, raw := range txn.PDUs {
			roomID := pduRoomID(raw)
			version := gomatrixserverlib.MustGetRoomVersion(fuzzVersions[i%len(fuzzVersions)])
			if ev, err := parsePDU(version, roomID, raw); err == nil && ev.RoomID().String() != roomID {
				t.Fatalf("parsePDU accepted an event of room %s as one of %s", ev.RoomID(), roomID)
			}
		}
	})
}

// FuzzPDU feeds events to parsePDU, the size, format and hash checks every PDU
// passes before its signatures and the auth rules. It must never panic; an
// event it accepts is of the room asked for, within the size bound, and parses
// again from its own JSON to the same event ID.
func FuzzPDU(f *testing.F) {
	for i, v := range fuzzVersions {
		f.Add(uint8(i), seedPDU(f, v))
	}
	f.Add(uint8(3), []byte(`{"room_id":"!room:remote.example","type":"m.room.message"}`))
	f.Add(uint8(4), []byte(`{"room_id":"!room:remote.example","room_id":"!other:remote.example","type":"m.room.create","content":{}}`))
	f.Add(uint8(5), []byte(`{"auth_events":"x","prev_events":[1,2],"depth":-1}`))
	f.Fuzz(func(t *testing.T, v uint8, raw []byte) {
		version := gomatrixserverlib.MustGetRoomVersion(fuzzVersions[int(v)%len(fuzzVersions)])
		roomID := pduRoomID(raw)
		ev, err := parsePDU(version, roomID, raw)
		if err != nil {
			return
		}
		if ev.RoomID().String() != roomID {
			t.Fatalf("parsePDU accepted an event of room %s as one of %s", ev.RoomID(), roomID)
		}
		if len(ev.JSON()) > maxPDUSize {
			t.Fatalf("parsePDU accepted an event of %d bytes", len(ev.JSON()))
		}
		// What the server does with an accepted event must not panic either.
		ev.EventID()
		ev.Type()
		ev.StateKey()
		ev.Membership()
		ev.PrevEventIDs()
		ev.AuthEventIDs()
		ev.Depth()
		ev.SenderID()
		ev.Redacts()
		ev.Sign("hongyan.example", "ed25519:a", ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
		redacted, _ := parsePDU(version, roomID, raw)
		redacted.Redact()
		again, err := parsePDU(version, roomID, ev.JSON())
		if err != nil {
			t.Fatalf("an accepted event does not parse again from its own JSON: %v", err)
		}
		if again.EventID() != ev.EventID() {
			t.Fatalf("event ID %s, then %s from the event's own JSON", ev.EventID(), again.EventID())
		}
	})
}

// TestSeedPDUsParse: the fuzzers start from events parsePDU accepts, so that
// their mutations reach past the first checks.
func TestSeedPDUsParse(t *testing.T) {
	for _, v := range fuzzVersions {
		raw := seedPDU(t, v)
		if _, err := parsePDU(gomatrixserverlib.MustGetRoomVersion(v), pduRoomID(raw), raw); err != nil {
			t.Errorf("parsePDU(room version %s seed) = %v; want it accepted", v, err)
		}
	}
}
