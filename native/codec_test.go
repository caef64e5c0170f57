package native

import (
	"bytes"
	"testing"
)

func TestCheckMsgPack(t *testing.T) {
	t.Parallel()
	deep := bytes.Repeat([]byte{0x91}, 200) // 200 nested one-element arrays
	deep = append(deep, 0x01)
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"a small map", []byte{0x81, 0xa1, 'a', 0x01}, true},
		{"array32 claiming four billion elements", []byte{0xdd, 0xff, 0xff, 0xff, 0xf0, 0x01}, false},
		{"map16 claiming more pairs than bytes", []byte{0xde, 0x10, 0x00, 0xa1, 'a', 0x01}, false},
		{"nesting past the limit", deep, false},
		{"string cut short", []byte{0xa5, 'a', 'b'}, false},
		{"the reserved byte", []byte{0xc1}, false},
		{"trailing bytes", []byte{0x01, 0x02}, false},
		{"float64 and bin8", []byte{0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xc4, 0x02, 0xff, 0xfe}, true},
	} {
		if err := checkMsgPack(tc.data); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v; want ok = %v", tc.name, err, tc.ok)
		}
	}
}
