package client

import (
	"sync"
	"time"
)

// broadcaster wakes subscribers on every change. A subscriber's channel has
// room for one pending wake-up, so slow readers coalesce changes instead of
// blocking the daemon.
type broadcaster struct {
	mu      sync.Mutex
	subs    map[chan struct{}]struct{}
	pending bool
	timer   *time.Timer
	closed  bool
}

// coalesceWindow bounds how often counter-only changes are announced.
const coalesceWindow = time.Second

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: map[chan struct{}]struct{}{}}
}

func (b *broadcaster) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(ch)
		return ch, func() {}
	}
	b.subs[ch] = struct{}{}
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notifyLocked()
}

func (b *broadcaster) notifyLocked() {
	for ch := range b.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// notifySoon announces a change at most once per coalesceWindow.
func (b *broadcaster) notifySoon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.pending || len(b.subs) == 0 {
		return
	}
	b.pending = true
	b.timer = time.AfterFunc(coalesceWindow, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.pending = false
		if !b.closed {
			b.notifyLocked()
		}
	})
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	for ch := range b.subs {
		delete(b.subs, ch)
		close(ch)
	}
}
