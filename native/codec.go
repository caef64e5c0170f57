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
