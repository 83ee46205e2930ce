package client

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv/netnstest"
)

// TestNetworkWatcherSeesChanges: in a fresh network namespace, bringing up
// a new interface with an address (what a new network does) calls the
// watcher's callback (TestDebouncerCoalesces covers the folding of bursts).
func TestNetworkWatcherSeesChanges(t *testing.T) {
	requireRoot(t)
	ns := netnstest.New(t, "pstw", "")
	changed := make(chan struct{}, 8)
	var w netWatcher
	if err := netnstest.Do(ns, func() error {
		var err error
		w, err = watchNetwork(slog.New(slog.NewTextHandler(io.Discard, nil)), func() { changed <- struct{}{} })
		return err
	}); err != nil {
		t.Fatalf("watch in %s: %v", ns, err)
	}
	defer w.Close()
	select {
	case <-changed:
		t.Fatal("callback without a change")
	case <-time.After(2 * netWatchDebounce):
	}
	run(t, "ip", "-n", ns, "link", "add", "pstw0", "type", "veth", "peer", "name", "pstw1")
	run(t, "ip", "-n", ns, "addr", "add", "198.51.100.7/24", "dev", "pstw0")
	run(t, "ip", "-n", ns, "link", "set", "pstw0", "up")
	run(t, "ip", "-n", ns, "link", "set", "pstw1", "up")
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("no callback after a new interface, address and route")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
