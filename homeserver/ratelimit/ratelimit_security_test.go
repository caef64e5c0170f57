package ratelimit

import (
	"fmt"
	"testing"
)

// TestBucketsBounded: fed ever new keys (other servers' names, addresses), a
// limiter holds at most its bound of buckets plus the overflow one; the keys
// past the bound share that one, so they are limited together rather than not
// at all, and keys already held keep their own.
func TestBucketsBounded(t *testing.T) {
	l := New(0.001, 2)
	l.maxKeys = 100
	for i := range 100 {
		l.Allow(fmt.Sprintf("k%d", i))
	}
	allowed := 0
	for i := 100; i < 1000; i++ {
		if ok, _ := l.Allow(fmt.Sprintf("k%d", i)); ok {
			allowed++
		}
		if n := len(l.buckets); n > l.maxKeys+1 {
			t.Fatalf("after %d keys, %d buckets; want at most %d", i+1, n, l.maxKeys+1)
		}
	}
	if allowed != 2 {
		t.Errorf("900 new keys past the bound: %d allowed; want 2 (the overflow bucket's burst)", allowed)
	}
	if ok, _ := l.Allow("k0"); !ok {
		t.Error("Allow(k0), a key held before the bound was reached = false; want true")
	}
}
