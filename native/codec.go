package native

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
	"github.com/vmihailenco/msgpack/v5"
)

// Every codec encodes the same Go types with the same field names: the structs'
// json tags. MessagePack and CBOR maps decode to map[string]any, so event content
// arriving in any codec can be re-encoded as the JSON a Matrix event holds.

var (
	cborEnc cbor.EncMode
	cborDec cbor.DecMode
)

func init() {
	var err error
	if cborEnc, err = (cbor.EncOptions{Sort: cbor.SortNone, Time: cbor.TimeUnix}).EncMode(); err != nil {
		panic(err)
	}
	cborDec, err = (cbor.DecOptions{
		DefaultMapType:    reflect.TypeOf(map[string]any{}),
		MaxNestedLevels:   32,
		MaxArrayElements:  100_000,
		MaxMapPairs:       100_000,
		IndefLength:       cbor.IndefLengthAllowed,
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorNone,
	}).DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v in codec c.
func Marshal(c Codec, v any) ([]byte, error) {
	switch c {
	case JSON:
		return json.Marshal(v)
	case MsgPack:
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		enc.SetCustomStructTag("json")
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case CBOR:
		return cborEnc.Marshal(v)
	}
	return nil, ErrBadCodec
}

// Unmarshal decodes data of codec c into v.
func Unmarshal(c Codec, data []byte, v any) error {
	switch c {
	case JSON:
		if !json.Valid(data) {
			return fmt.Errorf("body is not valid JSON")
		}
		return json.Unmarshal(data, v)
	case MsgPack:
		if err := checkMsgPack(data); err != nil {
			return err
		}
		dec := msgpack.NewDecoder(bytes.NewReader(data))
		dec.SetCustomStructTag("json")
		dec.UseLooseInterfaceDecoding(true)
		return dec.Decode(v)
	case CBOR:
		return cborDec.Unmarshal(data, v)
	}
	return ErrBadCodec
}

// UnmarshalData decodes the data of a whole frame body (an envelope) into v, for
// callers that hold v as an interface: the envelope is decoded with data kept raw,
// then data alone into v.
func UnmarshalData(c Codec, body []byte, v any) error {
	switch c {
	case JSON:
		var m struct {
			Data json.RawMessage `json:"data"`
		}
		if err := Unmarshal(c, body, &m); err != nil {
			return err
		}
		if len(m.Data) == 0 {
			return nil
		}
		return json.Unmarshal(m.Data, v)
	case MsgPack:
		var m struct {
			Data msgpack.RawMessage `json:"data"`
		}
		if err := Unmarshal(c, body, &m); err != nil {
			return err
		}
		if len(m.Data) == 0 {
			return nil
		}
		return Unmarshal(c, m.Data, v)
	case CBOR:
		var m struct {
			Data cbor.RawMessage `json:"data"`
		}
		if err := Unmarshal(c, body, &m); err != nil {
			return err
		}
		if len(m.Data) == 0 {
			return nil
		}
		return Unmarshal(c, m.Data, v)
	}
	return ErrBadCodec
}

// maxMsgPackDepth bounds how deeply MessagePack arrays and maps may nest.
const maxMsgPackDepth = 64

// msgPackFixed are the MessagePack types of a fixed size after their type byte.
var msgPackFixed = map[byte]int{
	0xcc: 1, 0xd0: 1, 0xcd: 2, 0xd1: 2, 0xca: 4, 0xce: 4, 0xd2: 4, 0xcb: 8, 0xcf: 8, 0xd3: 8, // numbers
	0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17, // fixext: type byte and data
}

// msgPackSized are the MessagePack types whose type byte is followed by a size-byte
// big-endian length: of bytes (plus extra), or of elements, per values each.
var msgPackSized = map[byte]struct{ size, extra, per int }{
	0xc4: {1, 0, 0}, 0xc5: {2, 0, 0}, 0xc6: {4, 0, 0}, // bin
	0xd9: {1, 0, 0}, 0xda: {2, 0, 0}, 0xdb: {4, 0, 0}, // str
	0xc7: {1, 1, 0}, 0xc8: {2, 1, 0}, 0xc9: {4, 1, 0}, // ext: data and its type byte
	0xdc: {2, 0, 1}, 0xdd: {4, 0, 1}, // array
	0xde: {2, 0, 2}, 0xdf: {4, 0, 2}, // map: keys and values
}

// checkMsgPack walks a MessagePack value without decoding it and refuses what a
// decoder would choke on: an array or map declaring more elements than bytes remain
// (the msgpack library allocates the declared length up front, so a 47-byte frame
// claiming four billion elements ran the server out of memory — found by fuzzing),
// nesting deeper than maxMsgPackDepth, truncation, and the reserved byte 0xc1.
func checkMsgPack(data []byte) error {
	bad := fmt.Errorf("invalid MessagePack body")
	pos := 0
	need := func(n int) bool { return n >= 0 && pos+n <= len(data) }
	length := func(size int) (int, bool) {
		if !need(size) {
			return 0, false
		}
		n := 0
		for i := 0; i < size; i++ {
			n = n<<8 | int(data[pos+i])
		}
		pos += size
		return n, n >= 0
	}
	pending := []int{1} // values still to read, per open container
	for len(pending) > 0 {
		if pending[len(pending)-1] == 0 {
			pending = pending[:len(pending)-1]
			continue
		}
		pending[len(pending)-1]--
		if !need(1) {
			return bad
		}
		b := data[pos]
		pos++
		skip, items := 0, 0
		switch {
		case b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3:
		case b >= 0x80 && b <= 0x8f:
			items = 2 * int(b&0x0f)
		case b >= 0x90 && b <= 0x9f:
			items = int(b & 0x0f)
		case b >= 0xa0 && b <= 0xbf:
			skip = int(b & 0x1f)
		default:
			if n, ok := msgPackFixed[b]; ok {
				skip = n
				break
			}
			h, ok := msgPackSized[b]
			if !ok {
				return bad // 0xc1, never used
			}
			n, ok := length(h.size)
			if !ok {
				return bad
			}
			if h.per == 0 {
				skip = n + h.extra
			} else {
				items = n * h.per
			}
		}
		if !need(skip) {
			return bad
		}
		pos += skip
		if items > 0 {
			// Every element takes at least one byte.
			if items > len(data)-pos || len(pending) >= maxMsgPackDepth {
				return bad
			}
			pending = append(pending, items)
		}
	}
	if pos != len(data) {
		return bad
	}
	return nil
}
