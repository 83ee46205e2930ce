// Package lograte spaces log lines about one key (a device, a source
// address) to one per interval, so that a flood of refusals writes a line
// per offender and interval, not a line per refusal. The connector (device
// flow limit, connections awaiting a token) and the relay (TURN quota)
// share it.
package lograte

import (
	"sync"
	"time"
)

// Limiter remembers when it last allowed a line about each key. Keys not
// allowed for an interval are forgotten, so it holds only recent offenders.
type Limiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
}

// New returns a Limiter that allows one line per key and every.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, last: map[string]time.Time{}}
}

// Allow reports whether a line about key may be written at now.
func (l *Limiter) Allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.every {
		return false
	}
	for k, t := range l.last { // forget keys not allowed lately
		if now.Sub(t) >= l.every {
			delete(l.last, k)
		}
	}
	l.last[key] = now
	return true
}

// remembered is how many keys l holds (tests).
func (l *Limiter) remembered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.last)
}
