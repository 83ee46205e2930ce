package dnsproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Listen opens the UDP and TCP sockets the proxy serves on addr, admitting
// only queries that arrive on the TUN device iface or come from this machine
// itself: a host that routes packets for addr to one of the machine's other
// interfaces gets no answer (no open resolver, no way to learn resource
// names from the outside).
//
// On Linux the sockets are bound to iface (SO_BINDTODEVICE): the kernel
// delivers queries from local programs (they count as arriving on the
// device that holds addr) and those arriving on iface, and refuses the rest
// as if nothing listened. Elsewhere a query is served only when its source
// address is one of the machine's own (a program on the machine); others
// are dropped, TCP connections closed at once.
//
// A freshly assigned IPv6 address may still be tentative: Listen retries
// binding for up to a second.
func Listen(ctx context.Context, addr netip.AddrPort, iface string) (net.PacketConn, net.Listener, error) {
	if iface == "" {
		return nil, nil, fmt.Errorf("%w: Listen needs the TUN device name", ErrConfig)
	}
	lc := net.ListenConfig{Control: bindControl(iface)}
	var (
		pc  net.PacketConn
		err error
	)
	for i := 0; i < 20; i++ {
		if pc, err = lc.ListenPacket(ctx, "udp", addr.String()); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dns listen udp %s on %s: %w", addr, iface, err)
	}
	ln, err := lc.Listen(ctx, "tcp", addr.String())
	if err != nil {
		pc.Close()
		return nil, nil, fmt.Errorf("dns listen tcp %s on %s: %w", addr, iface, err)
	}
	if !bindsToDevice {
		local := &localAddrs{}
		pc = &sourceFilterConn{PacketConn: pc, accept: local.contains}
		ln = &sourceFilterListener{Listener: ln, accept: local.contains}
	}
	return pc, ln, nil
}

// localAddrs answers whether an address is one of the machine's, from
// net.InterfaceAddrs refreshed at most once a second when an address is not
// found (interfaces come and go).
type localAddrs struct {
	mu      sync.Mutex
	set     map[netip.Addr]bool
	fetched time.Time
	list    func() ([]net.Addr, error) // net.InterfaceAddrs; replaced in tests
}

func (l *localAddrs) contains(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set[a] {
		return true
	}
	if time.Since(l.fetched) < time.Second {
		return false
	}
	list := l.list
	if list == nil {
		list = net.InterfaceAddrs
	}
	addrs, err := list()
	l.fetched = time.Now()
	if err != nil {
		return false
	}
	l.set = make(map[netip.Addr]bool, len(addrs))
	for _, ad := range addrs {
		if p, err := netip.ParsePrefix(ad.String()); err == nil {
			l.set[p.Addr().Unmap()] = true
		}
	}
	return l.set[a]
}

// sourceFilterConn drops datagrams from sources accept refuses.
type sourceFilterConn struct {
	net.PacketConn
	accept func(netip.Addr) bool
}

func (c *sourceFilterConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		if ap, ok := addrOf(from); ok && c.accept(ap) {
			return n, from, nil
		}
	}
}

// sourceFilterListener closes connections from sources accept refuses.
type sourceFilterListener struct {
	net.Listener
	accept func(netip.Addr) bool
}

func (l *sourceFilterListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if a, ok := addrOf(c.RemoteAddr()); ok && l.accept(a) {
			return c, nil
		}
		c.Close()
	}
}

func addrOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr(), true
	case *net.TCPAddr:
		return a.AddrPort().Addr(), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr(), true
}
