// Package ratelimit limits how fast one user or one address may make requests: a
// token bucket per key (golang.org/x/time/rate), in memory. (The Redis-backed
// limiter for several nodes will sit behind the same Allow.)
package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a set of token buckets keyed by user ID or IP. The zero value is not
// usable; call New. A nil *Limiter allows everything, so "off" needs no special case.
type Limiter struct {
	rate  rate.Limit // tokens per second
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter // guarded by mu
	swept   time.Time                // guarded by mu
	maxKeys int                      // 0 means defaultMaxKeys; tests set it lower
}

// defaultMaxKeys bounds the buckets a limiter holds: keys come from outside
// (addresses, other servers' names), and a flood of new ones must not grow
// memory without end. Past it, buckets that have refilled are dropped at once;
// if none has, new keys share one overflow bucket until some do.
const defaultMaxKeys = 100_000

// overflowKey is the bucket new keys share while the limiter is full. No user
// ID, address or server name contains a NUL.
const overflowKey = "\x00overflow"

// New returns a limiter allowing perSecond requests per key on average and burst at once.
func New(perSecond float64, burst int) *Limiter {
	return &Limiter{rate: rate.Limit(perSecond), burst: burst, buckets: map[string]*rate.Limiter{}, swept: time.Now()}
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
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[key] = b
	}
	r := b.ReserveN(now, 1)
	if !r.OK() {
		// A burst below one never holds a whole token: say when one would
		// have accrued, as a client's back-off hint.
		return false, l.tokenInterval()
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now) // a refused request takes nothing from the bucket
		return false, wait
	}
	return true, 0
}

// tokenInterval is how long one token takes to accrue.
func (l *Limiter) tokenInterval() time.Duration {
	if l.rate <= 0 {
		return math.MaxInt64
	}
	return time.Duration(float64(time.Second) / float64(l.rate))
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
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
}
