package client

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
)

// failingDialer refuses every dial and reports when each attempt happened.
type failingDialer struct{ attempts chan time.Time }

var errTestUnreachable = errors.New("via relay relay-1: context deadline exceeded")

func (f failingDialer) Dial(ctx context.Context, c controlapi.ConnectorInfo, _ *tls.Config, _ *quic.Config) (*quic.Conn, PathInfo, error) {
	select {
	case f.attempts <- time.Now():
	default:
	}
	return nil, PathInfo{}, errTestUnreachable
}

// staticTokens hands out a token without a controller.
type staticTokens struct{ calls atomic.Int64 }

func (s *staticTokens) ConnectionToken(context.Context, controlapi.ConnectorInfo) (string, *ctoken.Claims, error) {
	s.calls.Add(1)
	return "token", &ctoken.Claims{ConnectorCertSHA256: strings.Repeat("ab", 32),
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(10 * time.Minute))}}, nil
}

func (s *staticTokens) DeviceCert() tls.Certificate { return tls.Certificate{} }

// TestReconnectBackoffAndRetryNow: a failed dial starts the background
// redial, whose attempts back off (jittered) up to reconnectMax and which a
// network change (retryNow) makes try again at once; the entry says
// reconnecting with the last error; closing the pool stops it.
func TestReconnectBackoffAndRetryNow(t *testing.T) {
	fd := failingDialer{attempts: make(chan time.Time, 64)}
	p := newPool(fd, &staticTokens{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	e := p.entry(controlapi.ConnectorInfo{ID: "c1", Name: "corp-a", Online: true})
	if _, err := p.get(context.Background(), e); !errors.Is(err, errTestUnreachable) {
		t.Fatalf("first dial: %v", err)
	}
	<-fd.attempts // the flow's own dial
	e.mu.Lock()
	state, lastErr, since := e.stateLocked(), e.lastErr, e.since
	e.mu.Unlock()
	if state != ConnStateReconnecting || !strings.Contains(lastErr, errTestUnreachable.Error()) || since.IsZero() {
		t.Fatalf("after a failed dial: state %q, last error %q, since %v", state, lastErr, since)
	}
	// Wait until the backoff has grown past 1 s.
	last := time.Now()
	var gap time.Duration
	deadline := time.After(15 * time.Second)
	for gap < time.Second {
		select {
		case at := <-fd.attempts:
			gap, last = at.Sub(last), at
			if gap > reconnectMax+500*time.Millisecond {
				t.Fatalf("redial gap %v beyond the cap %v", gap, reconnectMax)
			}
		case <-deadline:
			t.Fatal("the background redial did not back off past 1 s within 15 s")
		}
	}
	start := time.Now()
	p.retryNow()
	select {
	case at := <-fd.attempts:
		if el := at.Sub(start); el > 300*time.Millisecond {
			t.Errorf("redial %v after a network change, want at once", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no redial after a network change")
	}
	p.close()
	e.mu.Lock()
	running := e.reconnecting
	e.mu.Unlock()
	if running {
		t.Error("redial still running after the pool closed")
	}
}

func TestDebouncerCoalesces(t *testing.T) {
	var n atomic.Int64
	fired := make(chan struct{}, 4)
	d := newDebouncer(func() { n.Add(1); fired <- struct{}{} })
	defer d.stop()
	start := time.Now()
	for i := 0; i < 20; i++ {
		d.event()
	}
	select {
	case <-fired:
	case <-time.After(3 * time.Second):
		t.Fatal("debouncer never fired")
	}
	if el := time.Since(start); el < netWatchDebounce {
		t.Errorf("fired after %v, before the debounce %v", el, netWatchDebounce)
	}
	select {
	case <-fired:
		t.Errorf("a burst of 20 events fired %d times", n.Load())
	case <-time.After(2 * netWatchDebounce):
	}
}
