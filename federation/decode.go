package federation

import (
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
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
	if ev.RoomID().String() != roomID {
		return nil, fmt.Errorf("event %s: room %s, not %s", ev.EventID(), ev.RoomID(), roomID)
	}
	return ev, nil
}
