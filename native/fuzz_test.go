package native

import (
	"bufio"
	"bytes"
	"testing"
)

// Fuzz targets for everything a peer controls before an op runs: the frame reader
// and each codec's envelope and request decoding. Seed corpora are in
// testdata/fuzz; scripts/test.sh runs each target briefly.

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{1, 0, 0, 1, 0x80})
	f.Add([]byte{2, 0xff, 0xff, 0xff})
	f.Add([]byte{9, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			c, body, err := ReadFrame(r, 1<<16)
			if err != nil {
				return
			}
			if c > CBOR || len(body) > 1<<16 {
				t.Fatalf("accepted codec %d, %d bytes", c, len(body))
			}
			frame, err := AppendFrame(nil, c, body)
			if err != nil {
				t.Fatal(err)
			}
			c2, body2, err := ReadFrame(bufio.NewReader(bytes.NewReader(frame)), 1<<16)
			if err != nil || c2 != c || !bytes.Equal(body, body2) {
				t.Fatalf("frame does not round-trip: %v", err)
			}
		}
	})
}

// decodeAll decodes data as every request shape a session decodes.
func decodeAll(c Codec, data []byte) {
	var env Envelope
	Unmarshal(c, data, &env)
	var send Message[Send]
	Unmarshal(c, data, &send)
	var resume Message[Resume]
	Unmarshal(c, data, &resume)
	var ack Message[Ack]
	Unmarshal(c, data, &ack)
	var auth Message[Auth]
	Unmarshal(c, data, &auth)
	var upload Message[Upload]
	Unmarshal(c, data, &upload)
	var anything any
	UnmarshalData(c, data, &anything)
}

func fuzzCodec(f *testing.F, c Codec) {
	for _, v := range []any{
		Message[Hello]{ID: "1", Op: "hello", Data: Hello{Version: 1, Client: "fuzz"}},
		Message[Send]{ID: "2", Op: "send", Data: Send{RoomID: "!r:x", Kind: "custom", Type: "t", Content: map[string]any{"a": []any{1, "b", map[string]any{"c": true}}}}},
		Message[Resume]{ID: "3", Op: "resume", Data: Resume{Rooms: map[string]int64{"!r:x": 42}}},
		Message[Upload]{ID: "4", Op: "upload", Data: Upload{ContentType: "image/png", Data: []byte{0, 1, 2}}},
	} {
		b, err := Marshal(c, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeAll(c, data)
		// Whatever decodes re-encodes without error.
		var m Message[Send]
		if Unmarshal(c, data, &m) == nil {
			if _, err := Marshal(c, m); err != nil {
				t.Fatalf("decoded %+v but cannot encode it: %v", m, err)
			}
		}
	})
}

func FuzzJSON(f *testing.F)    { fuzzCodec(f, JSON) }
func FuzzMsgPack(f *testing.F) { fuzzCodec(f, MsgPack) }
func FuzzCBOR(f *testing.F)    { fuzzCodec(f, CBOR) }
