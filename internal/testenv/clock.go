package testenv

import (
	"sync"
	"time"
)

// Clock is real time moved by an offset that a test advances: code under
// test that judges MFA windows, grant ends or auto-lock by an injected Now
// sees the time pass at once. The zero value is real time.
type Clock struct {
	mu  sync.Mutex
	off time.Duration
}

// Now is the real time plus the offset so far.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

// Advance moves the clock d forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}
