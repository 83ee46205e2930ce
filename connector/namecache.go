package connector

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Why the connector remembers a name's addresses for a second.
//
// Every flow to a named destination resolved it again. Go's resolver runs
// each lookup on a goroutine of its own (singleflight), and on a host whose
// nsswitch.conf lists mdns (Debian and Ubuntu by default) a cgo build also
// stats /etc/mdns.allow on every lookup: about 4 % of the connector's CPU
// while 64 clients opened short connections to one name, and one more
// scheduler hand-off on every flow's setup (docs/datapath-performance.md,
// "Opening flows in parallel"). A burst of flows to one service (a
// browser, a CI job, a connection pool) now resolves it once a second.
// Only answers are remembered, never failures, and for nameCacheTTL at
// most: far below the TTLs private zones use, so a changed record reaches
// new flows within a second.

const (
	nameCacheTTL = time.Second
	nameCacheMax = 4096 // names remembered at most; then expired ones go, or all
)

// nameCache remembers successful lookups for nameCacheTTL. The zero value
// is ready to use.
type nameCache struct {
	now func() time.Time // nil: time.Now

	mu      sync.Mutex
	entries map[nameKey]nameEntry
}

type nameKey struct{ network, host string }

type nameEntry struct {
	addrs []netip.Addr
	until time.Time
}

func (n *nameCache) clock() time.Time {
	if n.now != nil {
		return n.now()
	}
	return time.Now()
}

// lookup returns host's addresses for network ("ip", "ip4", "ip6") from
// the cache or from r. The caller owns the returned slice.
func (n *nameCache) lookup(ctx context.Context, r Resolver, network, host string) ([]netip.Addr, error) {
	k := nameKey{network, host}
	n.mu.Lock()
	e, ok := n.entries[k]
	n.mu.Unlock()
	if ok && n.clock().Before(e.until) {
		return slices.Clone(e.addrs), nil
	}
	ips, err := r.LookupNetIP(ctx, network, host)
	if err != nil || len(ips) == 0 {
		return ips, err
	}
	now := n.clock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries == nil {
		n.entries = map[nameKey]nameEntry{}
	}
	if len(n.entries) >= nameCacheMax {
		for k, e := range n.entries {
			if !now.Before(e.until) {
				delete(n.entries, k)
			}
		}
		if len(n.entries) >= nameCacheMax {
			clear(n.entries)
		}
	}
	n.entries[k] = nameEntry{addrs: slices.Clone(ips), until: now.Add(nameCacheTTL)}
	return ips, nil
}
