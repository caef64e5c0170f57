package rooms

import (
	"fmt"
	"maps"
	"testing"
)

// TestStateView: a view derived with with shares its base and never changes the
// view it came from, also across the fold of a long delta into a new base.
func TestStateView(t *testing.T) {
	base := map[[2]string]string{{"m.room.create", ""}: "$create", {"m.room.member", "@a:x"}: "$a"}
	v := &stateView{base: base}
	views := []*stateView{v}
	for i := range flattenAt + 10 {
		v = v.with([2]string{"m.room.member", fmt.Sprintf("@u%d:x", i)}, fmt.Sprintf("$u%d", i))
		views = append(views, v)
	}
	v = v.with([2]string{"m.room.member", "@a:x"}, "$a2")
	for i, w := range views {
		want := maps.Clone(base)
		for j := range i {
			want[[2]string{"m.room.member", fmt.Sprintf("@u%d:x", j)}] = fmt.Sprintf("$u%d", j)
		}
		if got := w.flat(); !maps.Equal(got, want) {
			t.Errorf("view %d after later withs: %d entries; want %d, unchanged", i, len(got), len(want))
		}
	}
	for _, tc := range []struct {
		key    [2]string
		want   string
		wantOK bool
	}{
		{[2]string{"m.room.member", "@a:x"}, "$a2", true},
		{[2]string{"m.room.create", ""}, "$create", true},
		{[2]string{"m.room.member", "@u3:x"}, "$u3", true},
		{[2]string{"m.room.member", "@nobody:x"}, "", false},
	} {
		if got, ok := v.get(tc.key); got != tc.want || ok != tc.wantOK {
			t.Errorf("get(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.wantOK)
		}
	}
	if base[[2]string{"m.room.member", "@a:x"}] != "$a" || len(base) != 2 {
		t.Errorf("base changed: %v", base)
	}
}
