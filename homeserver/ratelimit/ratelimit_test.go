package ratelimit

import "testing"

func TestAllowBurstThenLimit(t *testing.T) {
	l := New(1, 3)
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("Allow(a) #%d = false; want true within the burst", i+1)
		}
	}
	ok, retry := l.Allow("a")
	if ok || retry <= 0 {
		t.Fatalf("Allow(a) after burst = %v, %v; want false with a positive retry", ok, retry)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("Allow(b) = false; want true: keys have separate buckets")
	}
	var off *Limiter
	if ok, _ := off.Allow("a"); !ok {
		t.Fatal("nil limiter refused a request")
	}
}
