package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/wire"
)

// countingResolver answers from a map and counts the lookups per name.
type countingResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	calls   map[string]int
}

func (r *countingResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[network+" "+host]++
	if a, ok := r.answers[host]; ok {
		return append([]netip.Addr(nil), a...), nil
	}
	return nil, errors.New("no such host")
}

func (r *countingResolver) count(network, host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[network+" "+host]
}

func (r *countingResolver) set(host string, addrs ...netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[host] = addrs
}

// TestResolveRemembersNamesForASecond: flows to one name within
// nameCacheTTL resolve it once; after that, and for a changed record, the
// resolver is asked again; failures are never remembered.
func TestResolveRemembersNamesForASecond(t *testing.T) {
	a1, a2 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	r := &countingResolver{answers: map[string][]netip.Addr{"db.corp.internal": {a1}}}
	now := time.Unix(1_000_000, 0)
	c := &Connector{cfg: Config{Resolver: r}}
	c.names.now = func() time.Time { return now }
	h := wire.OpenHeader{Proto: wire.ProtoTCP, Port: 5432, Destination: "db.corp.internal"}
	resolve := func() []netip.Addr {
		t.Helper()
		addrs, st, msg := c.resolve(context.Background(), h)
		if st != wire.StatusOK {
			t.Fatalf("resolve: %v %s", st, msg)
		}
		return addrs
	}

	for i := 0; i < 5; i++ {
		if got := resolve(); len(got) != 1 || got[0] != a1 {
			t.Fatalf("flow %d: addresses %v, want [%v]", i, got, a1)
		}
		now = now.Add(nameCacheTTL / 10)
	}
	if n := r.count("ip", "db.corp.internal"); n != 1 {
		t.Fatalf("5 flows within %v asked the resolver %d times, want 1", nameCacheTTL, n)
	}

	// A changed record reaches new flows once the second is over.
	r.set("db.corp.internal", a2)
	now = now.Add(nameCacheTTL)
	if got := resolve(); len(got) != 1 || got[0] != a2 {
		t.Fatalf("after %v: addresses %v, want [%v]", nameCacheTTL, got, a2)
	}
	if n := r.count("ip", "db.corp.internal"); n != 2 {
		t.Fatalf("resolver asked %d times after the entry expired, want 2", n)
	}

	// A caller that filters the answer in place does not change the cache.
	got := resolve()
	got[0] = netip.MustParseAddr("127.0.0.1")
	if got := resolve(); got[0] != a2 {
		t.Fatalf("cached answer changed by a caller: %v", got)
	}

	// Failures are not remembered.
	h.Destination = "missing.corp.internal"
	for i := 0; i < 3; i++ {
		if _, st, _ := c.resolve(context.Background(), h); st != wire.StatusUnreachable {
			t.Fatalf("unknown name: status %v, want unreachable", st)
		}
	}
	if n := r.count("ip", "missing.corp.internal"); n != 3 {
		t.Fatalf("3 failed lookups asked the resolver %d times, want 3", n)
	}
}

// TestNameCacheBounded: the cache never holds more than nameCacheMax
// names, and the newest answer is kept when it is full.
func TestNameCacheBounded(t *testing.T) {
	r := &countingResolver{answers: map[string][]netip.Addr{}}
	var n nameCache
	now := time.Unix(1_000_000, 0)
	n.now = func() time.Time { return now }
	for i := 0; i < nameCacheMax+10; i++ {
		host := fmt.Sprintf("h%d.corp.internal", i)
		r.set(host, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
		if _, err := n.lookup(context.Background(), r, "ip", host); err != nil {
			t.Fatal(err)
		}
		if len(n.entries) > nameCacheMax {
			t.Fatalf("%d entries after %d names, want at most %d", len(n.entries), i+1, nameCacheMax)
		}
		if _, ok := n.entries[nameKey{"ip", host}]; !ok {
			t.Fatalf("the newest name %q is not remembered", host)
		}
	}
}

// BenchmarkNameLookup compares a flow's name lookup through the host's
// resolver (a name from /etc/hosts: no network) with the cached one.
func BenchmarkNameLookup(b *testing.B) {
	for _, cached := range []bool{false, true} {
		b.Run(map[bool]string{false: "resolver", true: "cached"}[cached], func(b *testing.B) {
			b.ReportAllocs()
			var n nameCache
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				var err error
				if cached {
					_, err = n.lookup(ctx, net.DefaultResolver, "ip", "localhost")
				} else {
					_, err = net.DefaultResolver.LookupNetIP(ctx, "ip", "localhost")
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
