package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

func generateECKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ipLimiter is a token bucket per client IP.
type ipLimiter struct {
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

func newIPLimiter(rps float64, burst int) *ipLimiter {
	l := &ipLimiter{rate: rate.Limit(rps), burst: burst, m: map[string]*ipEntry{}, done: make(chan struct{})}
	go l.janitor()
	return l
}

func (l *ipLimiter) allow(ip string) bool {
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

func (l *ipLimiter) janitor() {
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

func (l *ipLimiter) stop() { l.once.Do(func() { close(l.done) }) }

// loginThrottle slows password guessing: after a few failures for one
// account or many from one IP, further attempts are refused for a delay that
// doubles with every failure (capped at 15 minutes).
type loginThrottle struct {
	mu sync.Mutex
	m  map[string]*failEntry
}

type failEntry struct {
	fails int
	until time.Time
	last  time.Time
}

const (
	accountFreeFailures = 5
	ipFreeFailures      = 20
	maxLockout          = 15 * time.Minute
	failMemory          = time.Hour
)

func newLoginThrottle() *loginThrottle { return &loginThrottle{m: map[string]*failEntry{}} }

// check returns how long the caller must wait before trying key again.
func (t *loginThrottle) check(keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	var wait time.Duration
	for _, k := range keys {
		e, ok := t.m[k]
		if !ok {
			continue
		}
		if now.Sub(e.last) > failMemory {
			delete(t.m, k)
			continue
		}
		if d := e.until.Sub(now); d > wait {
			wait = d
		}
	}
	return wait
}

// fail records a failure for account key acct and ip key ipk.
func (t *loginThrottle) fail(acct, ipk string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if len(t.m) > 100000 {
		for k, e := range t.m {
			if now.Sub(e.last) > failMemory || e.until.Before(now) {
				delete(t.m, k)
			}
		}
	}
	for _, kv := range []struct {
		k    string
		free int
	}{{acct, accountFreeFailures}, {ipk, ipFreeFailures}} {
		if kv.k == "" {
			continue
		}
		e, ok := t.m[kv.k]
		if !ok || now.Sub(e.last) > failMemory {
			e = &failEntry{}
			t.m[kv.k] = e
		}
		e.fails++
		e.last = now
		if over := e.fails - kv.free; over >= 0 {
			d := time.Duration(math.Min(float64(maxLockout), float64(time.Second)*math.Pow(2, float64(over))))
			e.until = now.Add(d)
		}
	}
}

// success clears the account's failures.
func (t *loginThrottle) success(acct string) {
	t.mu.Lock()
	delete(t.m, acct)
	t.mu.Unlock()
}
