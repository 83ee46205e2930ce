package client

import (
	"time"
)

// netWatchDebounce folds the burst of address, route and link messages one
// network change makes (DHCP, Wi-Fi roam, VPN up) into one notification.
const netWatchDebounce = 250 * time.Millisecond

// netWatcher reports changes of the machine's network configuration to the
// pool, so that connectors being redialed are tried at once on the new
// network instead of after their backoff. watchNetwork is per platform
// (netwatch_linux.go: netlink address, route and link messages; elsewhere a
// stub that reports nothing, and redials follow their backoff alone).
type netWatcher interface {
	Close() error
}

// debouncer calls f once after events stop arriving for netWatchDebounce.
type debouncer struct {
	in   chan struct{}
	done chan struct{}
}

func newDebouncer(f func()) *debouncer {
	d := &debouncer{in: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		var t *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-d.done:
				if t != nil {
					t.Stop()
				}
				return
			case <-d.in:
				if t == nil {
					t = time.NewTimer(netWatchDebounce)
				} else {
					t.Reset(netWatchDebounce)
				}
				fire = t.C
			case <-fire:
				fire = nil
				f()
			}
		}
	}()
	return d
}

func (d *debouncer) event() {
	select {
	case d.in <- struct{}{}:
	default:
	}
}

func (d *debouncer) stop() { close(d.done) }

// nopWatcher is what platforms without a watcher return.
type nopWatcher struct{}

func (nopWatcher) Close() error { return nil }
