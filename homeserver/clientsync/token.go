// Package clientsync works out what each client has not seen yet: stream positions, the
// notifier that wakes long-polls, /sync, sliding sync and the legacy /events. Its name
// keeps it from shadowing the standard library's sync.
package clientsync

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Token is a position in every stream a client follows; a since token is one of
// these. Its text form is "s<events>_<account data>_<receipts>_<typing>_<presence>_<to-device>_<device lists>_<notifications>", and later
// streams append components, so tokens issued before an upgrade still parse (missing
// components are zero).
type Token struct {
	Events      int64
	AccountData int64
	Receipts    int64
	Typing      int64
	Presence    int64
	ToDevice    int64
	DeviceLists int64
	// Notifications is the push notifications stream: a new notification
	// changes the user's unread counts after the event itself was synced.
	Notifications int64
}

func (t Token) String() string {
	return fmt.Sprintf("s%d_%d_%d_%d_%d_%d_%d_%d", t.Events, t.AccountData, t.Receipts, t.Typing, t.Presence, t.ToDevice, t.DeviceLists, t.Notifications)
}

// ParseToken reads a since token; malformed tokens are M_INVALID_PARAM.
func ParseToken(s string) (Token, error) {
	bad := mxerror.New(mxerror.InvalidParam, "invalid since token %q", s)
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return Token{}, bad
	}
	parts := strings.Split(rest, "_")
	var nums []int64
	for _, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return Token{}, bad
		}
		nums = append(nums, n)
	}
	for len(nums) < 8 {
		nums = append(nums, 0)
	}
	return Token{Events: nums[0], AccountData: nums[1], Receipts: nums[2], Typing: nums[3], Presence: nums[4],
		ToDevice: nums[5], DeviceLists: nums[6], Notifications: nums[7]}, nil
}

func errInvalidFilter(param string) error {
	return mxerror.New(mxerror.InvalidParam, "invalid filter %q", param)
}
