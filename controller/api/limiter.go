package api

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// IPLimiter is a token bucket per client IP; buckets idle for five minutes
// are dropped.
type IPLimiter struct {
	rate  rate.Limit
	burst int

	mu   sync.Mutex
	m    map[string]*ipEntry
	done chan struct{}
	once sync.Once
}

type ipEntry struct {
	lim  *rate.Limiter
	last time.Time
}

// NewIPLimiter allows each IP rps requests a second, with bursts of burst.
// Stop ends its janitor.
func NewIPLimiter(rps float64, burst int) *IPLimiter {
	l := &IPLimiter{rate: rate.Limit(rps), burst: burst, m: map[string]*ipEntry{}, done: make(chan struct{})}
	go l.janitor()
	return l
}

// Allow takes a token of ip's bucket, reporting whether there was one.
func (l *IPLimiter) Allow(ip string) bool {
	l.mu.Lock()
	e, ok := l.m[ip]
	if !ok {
		e = &ipEntry{lim: rate.NewLimiter(l.rate, l.burst)}
		l.m[ip] = e
	}
	e.last = time.Now()
	l.mu.Unlock()
	return e.lim.Allow()
}

func (l *IPLimiter) janitor() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.mu.Lock()
			for ip, e := range l.m {
				if time.Since(e.last) > 5*time.Minute {
					delete(l.m, ip)
				}
			}
			l.mu.Unlock()
		}
	}
}

// Stop ends the janitor; it may be called more than once.
func (l *IPLimiter) Stop() { l.once.Do(func() { close(l.done) }) }
