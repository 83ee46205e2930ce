package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
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
