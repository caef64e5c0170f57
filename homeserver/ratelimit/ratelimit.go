// Package ratelimit limits how fast one user or one address may make requests: a
// token bucket per key, in memory. (The Redis-backed limiter for several nodes will
// sit behind the same Allow.)
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Limiter is a set of token buckets keyed by user ID or IP. The zero value is not
// usable; call New. A nil *Limiter allows everything, so "off" needs no special case.
type Limiter struct {
	rate  float64 // tokens per second
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket // guarded by mu
	swept   time.Time          // guarded by mu
	maxKeys int                // 0 means defaultMaxKeys; tests set it lower
}

// defaultMaxKeys bounds the buckets a limiter holds: keys come from outside
// (addresses, other servers' names), and a flood of new ones must not grow
// memory without end. Past it, buckets that have refilled are dropped at once;
// if none has, new keys share one overflow bucket until some do.
const defaultMaxKeys = 100_000

// overflowKey is the bucket new keys share while the limiter is full. No user
// ID, address or server name contains a NUL.
const overflowKey = "\x00overflow"

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter allowing perSecond requests per key on average and burst at once.
func New(perSecond float64, burst int) *Limiter {
	return &Limiter{rate: perSecond, burst: float64(burst), buckets: map[string]*bucket{}, swept: time.Now()}
}

// Allow takes one token from key's bucket. When none is left it returns false and how
// long until one will be.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil && len(l.buckets) >= l.limit() {
		l.swept = time.Time{}
		l.sweep(now)
		if len(l.buckets) >= l.limit() {
			key = overflowKey
			b = l.buckets[key]
		}
	}
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

func (l *Limiter) limit() int {
	if l.maxKeys > 0 {
		return l.maxKeys
	}
	return defaultMaxKeys
}

// sweep drops buckets that have refilled completely, at most once a minute, so idle
// keys do not accumulate. mu must be held.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, k)
		}
	}
}
