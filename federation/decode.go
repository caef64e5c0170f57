package federation

import (
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/httpapi"
)

// The decoders of what other servers send, before anything is looked up or
// stored: pure functions of the bytes, fuzzed in fuzz_test.go.

// Transaction limits from the spec: a transaction carries at most 50 PDUs and 100 EDUs.
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

// maxPDUSize is the spec's bound on an event's size (65 536 bytes of JSON),
// checked before parsing; gomatrixserverlib checks it again on the canonical form.
const maxPDUSize = 65536

// transaction is the body of PUT /send/{txnId}.
type transaction struct {
	Origin string                  `json:"origin"`
	PDUs   []json.RawMessage       `json:"pdus"`
	EDUs   []gomatrixserverlib.EDU `json:"edus"`
}

// decodeTransaction decodes a /send body and checks its counts. The PDUs stay
// raw: each is parsed on its own with its room's version (parsePDU), so one bad
// event does not sink the others.
func decodeTransaction(body []byte) (transaction, error) {
	var txn transaction
	if err := httpapi.DecodeJSON(body, &txn); err != nil {
		return txn, err
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		return txn, mxerror.New(mxerror.BadJSON, "a transaction carries at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs)
	}
	return txn, nil
}

// pduRoomID is the room a raw PDU names, by which its room version is found.
func pduRoomID(raw []byte) string {
	return gjson.GetBytes(raw, "room_id").String()
}

// parsePDU parses a PDU of roomID, a room of the given version: its size, its
// format and hashes (gomatrixserverlib), and that the event parsed is of the
// room its version was looked up by. (A JSON object may name room_id twice;
// gjson and encoding/json need not agree on which one counts.)
func parsePDU(version gomatrixserverlib.IRoomVersion, roomID string, raw []byte) (gomatrixserverlib.PDU, error) {
	if len(raw) > maxPDUSize {
		return nil, fmt.Errorf("event of %d bytes: larger than %d", len(raw), maxPDUSize)
	}
	ev, err := version.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, err
	}
	id, err := roomIDOf(ev)
	if err != nil {
		return nil, err
	}
	// Signatures of the wrong shape pass gomatrixserverlib's parsing, but its
	// Sign panics on them (found by FuzzPDU), and an invite is signed here
	// before its signatures are checked. Read as Sign reads them.
	var sigs struct {
		Signatures map[string]map[gomatrixserverlib.KeyID]spec.Base64Bytes `json:"signatures"`
	}
	if err := json.Unmarshal(ev.JSON(), &sigs); err != nil {
		return nil, fmt.Errorf("event %s: signatures: %w", ev.EventID(), err)
	}
	if id != roomID {
		return nil, fmt.Errorf("event %s: room %s, not %s", ev.EventID(), id, roomID)
	}
	return ev, nil
}

// roomIDOf is an event's room ID, or an error where gomatrixserverlib's
// RoomID would panic: it parses the room ID only when asked, and an event parses
// with any string there ("!:" included, found by FuzzTransaction).
func roomIDOf(ev gomatrixserverlib.PDU) (id string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("event %s: invalid room ID: %v", ev.EventID(), p)
		}
	}()
	return ev.RoomID().String(), nil
}

// untrustedPDUs parses the events another server answered with for a room, and
// leaves out those that fail parsePDU (not events, of another room). Like
// gomatrixserverlib's EventJSONs.UntrustedEvents, which leaves out only the
// first kind.
func untrustedPDUs(version gomatrixserverlib.IRoomVersion, roomID string, raws gomatrixserverlib.EventJSONs) []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, 0, len(raws))
	for _, raw := range raws {
		if ev, err := parsePDU(version, roomID, raw); err == nil {
			out = append(out, ev)
		}
	}
	return out
}
