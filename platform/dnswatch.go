package platform

import (
	"net/netip"
	"sync"
	"time"
)

// dnsWatch is the watcher a DNS configurator runs while its change is in
// place: one goroutine runs a check every interval, and the resolvers a
// check finds changed go to the OnOriginalChange callback.
type dnsWatch struct {
	mu       sync.Mutex
	onChange func([]netip.AddrPort, []string)
	stop     chan struct{}
	stopped  chan struct{}
}

func (w *dnsWatch) OnOriginalChange(f func([]netip.AddrPort, []string)) {
	w.mu.Lock()
	w.onChange = f
	w.mu.Unlock()
}

// start runs check every interval until stopWatch, unless it runs already.
func (w *dnsWatch) start(interval time.Duration, check func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stop != nil {
		return
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	w.stop, w.stopped = stop, stopped
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			check()
		}
	}()
}

// report hands changed resolvers to the callback, if one is set.
func (w *dnsWatch) report(servers []netip.AddrPort, search []string) {
	w.mu.Lock()
	f := w.onChange
	w.mu.Unlock()
	if f != nil {
		f(servers, search)
	}
}

// stopWatch ends the watcher goroutine and waits for it.
func (w *dnsWatch) stopWatch() {
	w.mu.Lock()
	stop, stopped := w.stop, w.stopped
	w.stop, w.stopped = nil, nil
	w.mu.Unlock()
	if stop != nil {
		close(stop)
		<-stopped
	}
}
