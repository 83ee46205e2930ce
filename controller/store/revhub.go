package store

import "sync"

// revHub fans committed revisions out to Watch subscribers. Both backends
// embed it: every subscriber holds at most the newest revision (a slow
// watcher skips to it), and Close closes every channel once.
type revHub struct {
	wmu      sync.Mutex
	watchers map[chan int64]struct{}
	maxRev   int64 // newest revision delivered (used by publishNewer)
	closed   bool
}

func newRevHub(rev int64) revHub {
	return revHub{watchers: map[chan int64]struct{}{}, maxRev: rev}
}

// Watch implements Store.
func (h *revHub) Watch() (<-chan int64, func()) {
	ch := make(chan int64, 1)
	h.wmu.Lock()
	if h.closed {
		close(ch)
		h.wmu.Unlock()
		return ch, func() {}
	}
	h.watchers[ch] = struct{}{}
	h.wmu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.wmu.Lock()
			if _, ok := h.watchers[ch]; ok {
				delete(h.watchers, ch)
				close(ch)
			}
			h.wmu.Unlock()
		})
	}
}

// publish delivers rev to every watcher.
func (h *revHub) publish(rev int64) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.closed {
		return
	}
	if rev > h.maxRev {
		h.maxRev = rev
	}
	h.deliverLocked(rev)
}

// publishNewer delivers rev only when it is newer than any delivered before
// (revisions reach a replica both from its own commits and from NOTIFY).
func (h *revHub) publishNewer(rev int64) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.closed || rev <= h.maxRev {
		return
	}
	h.maxRev = rev
	h.deliverLocked(rev)
}

func (h *revHub) deliverLocked(rev int64) {
	for ch := range h.watchers {
		// Keep only the newest revision: a slow watcher skips to it.
		select {
		case ch <- rev:
		default:
			select {
			case <-ch:
			default:
			}
			select {
			case ch <- rev:
			default:
			}
		}
	}
}

// closeWatchers closes every watcher channel; it reports whether the hub was
// already closed.
func (h *revHub) closeWatchers() (already bool) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.closed {
		return true
	}
	h.closed = true
	for ch := range h.watchers {
		close(ch)
	}
	h.watchers = map[chan int64]struct{}{}
	return false
}
