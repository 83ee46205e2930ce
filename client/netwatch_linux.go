package client

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/vishvananda/netlink"
)

// linuxNetWatcher listens to rtnetlink address, route and link messages of
// the daemon's network namespace.
type linuxNetWatcher struct {
	done chan struct{}
	deb  *debouncer
	wg   sync.WaitGroup
	once sync.Once
}

// watchNetwork calls onChange (debounced) after the network configuration
// changes. Routes the daemon installs itself for the TUN also count: a
// spurious call only makes redials try at once.
func watchNetwork(log *slog.Logger, onChange func()) (netWatcher, error) {
	w := &linuxNetWatcher{done: make(chan struct{}), deb: newDebouncer(onChange)}
	routes := make(chan netlink.RouteUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	cb := func(err error) { log.Debug("network watcher", "err", err) }
	if err := netlink.RouteSubscribeWithOptions(routes, w.done, netlink.RouteSubscribeOptions{ErrorCallback: cb}); err != nil {
		w.deb.stop()
		return nil, fmt.Errorf("watch route changes: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, w.done, netlink.AddrSubscribeOptions{ErrorCallback: cb}); err != nil {
		close(w.done)
		w.deb.stop()
		return nil, fmt.Errorf("watch address changes: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, w.done, netlink.LinkSubscribeOptions{ErrorCallback: cb}); err != nil {
		close(w.done)
		w.deb.stop()
		return nil, fmt.Errorf("watch link changes: %w", err)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for routes != nil || addrs != nil || links != nil {
			select {
			case _, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
			case _, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
			case _, ok := <-links:
				if !ok {
					links = nil
					continue
				}
			}
			// After Close the channels are drained until netlink closes
			// them: its readers block on a full channel otherwise.
			select {
			case <-w.done:
			default:
				w.deb.event()
			}
		}
	}()
	return w, nil
}

func (w *linuxNetWatcher) Close() error {
	w.once.Do(func() {
		close(w.done)
		w.wg.Wait()
		w.deb.stop()
	})
	return nil
}
