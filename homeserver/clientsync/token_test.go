package clientsync

import (
	"strconv"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, tok := range []Token{
		{},
		{Events: 1},
		{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Presence: 5, ToDevice: 6, DeviceLists: 7},
		{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Presence: 5, ToDevice: 6, DeviceLists: 7, Notifications: 8},
		{Events: 1 << 62, DeviceLists: 9},
		{Typing: 12, ToDevice: 40},
	} {
		s := tok.String()
		got, err := ParseToken(s)
		if err != nil {
			t.Errorf("ParseToken(%q) error %v; want %+v", s, err, tok)
			continue
		}
		if got != tok {
			t.Errorf("ParseToken(%q) = %+v; want %+v", s, got, tok)
		}
		// A since token is also a /messages "from": its first component is the
		// events position.
		if pos, err := rooms.ParseToken(s); err != nil || pos != tok.Events {
			t.Errorf("rooms.ParseToken(%q) = %d, %v; want %d", s, pos, err, tok.Events)
		}
	}
}

// TestParseTokenOlderForms: tokens issued before later streams were added still
// parse, their missing components zero; components beyond the known ones are
// ignored rather than refused, so a newer node's token does not break an older one.
func TestParseTokenOlderForms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Token
	}{
		{"s0", Token{}},
		{"s42", Token{Events: 42}},
		{"s42_7", Token{Events: 42, AccountData: 7}},
		{"s1_2_3_4_5", Token{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Presence: 5}},
		{"s1_2_3_4_5_6", Token{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Presence: 5, ToDevice: 6}},
		{"s1_2_3_4_5_6_7", Token{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Presence: 5, ToDevice: 6, DeviceLists: 7}},
		{"s1_2_3_4_5_6_7_8_9", Token{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Presence: 5, ToDevice: 6, DeviceLists: 7, Notifications: 8}},
	} {
		got, err := ParseToken(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseTokenBad(t *testing.T) {
	for _, in := range []string{
		"",
		"s",
		"1_2_3",
		"t1_2",
		"S1",
		"s-1",
		"s1_-2",
		"s1__3",
		"s1_",
		"s_1",
		"s1_x",
		"s 1",
		"s1 ",
		"s0x10",
		"s1.5",
		"s" + strconv.FormatUint(1<<63, 10), // overflows int64
		"s1_2_3_4_5_6_7_99999999999999999999",
	} {
		got, err := ParseToken(in)
		if !mxerror.Is(err, mxerror.InvalidParam) {
			t.Errorf("ParseToken(%q) = %+v, %v; want M_INVALID_PARAM", in, got, err)
		}
		if e, ok := mxerror.As(err); ok && e.HTTPStatus() != 400 {
			t.Errorf("ParseToken(%q) status %d; want 400", in, e.HTTPStatus())
		}
	}
}
