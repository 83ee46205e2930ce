package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestSourceFilter covers the filter Listen uses where the kernel cannot
// bind a socket to the TUN: queries from addresses that are not the
// machine's are dropped (UDP) or closed (TCP); the machine's own get answers.
func TestSourceFilter(t *testing.T) {
	p := newTestProxy(t, Config{Logger: quiet}, res("r1", "db", "db.corp.internal", "net1"))
	pc, ln := listenBoth(t)
	remote := func(netip.Addr) bool { return false } // as if 127.0.0.1 were another host
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.Serve(ctx, &sourceFilterConn{PacketConn: pc, accept: remote}, &sourceFilterListener{Listener: ln, accept: remote})
	}()
	t.Cleanup(func() { cancel(); <-done })
	m := new(dns.Msg)
	m.SetQuestion("db.corp.internal.", dns.TypeA)
	for _, netw := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: netw, Timeout: 300 * time.Millisecond}
		if r, _, err := c.Exchange(m, pc.LocalAddr().String()); err == nil {
			t.Errorf("%s query from a refused source answered: %v", netw, r.Answer)
		}
	}

	l := &localAddrs{list: func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.ParseIP("198.51.100.7"), Mask: net.CIDRMask(24, 32)}}, nil
	}}
	for a, want := range map[string]bool{"127.0.0.1": true, "::1": true, "198.51.100.7": true, "::ffff:198.51.100.7": true, "198.51.100.8": false, "203.0.113.1": false} {
		if got := l.contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("local(%s) = %v, want %v", a, got, want)
		}
	}
}

func TestListenNeedsDevice(t *testing.T) {
	if _, _, err := Listen(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), ""); err == nil {
		t.Fatal("Listen without a device name succeeded")
	}
}
