package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

const (
	resolvedBus      = "org.freedesktop.resolve1"
	resolvedPath     = "/org/freedesktop/resolve1"
	resolvedManager  = "org.freedesktop.resolve1.Manager"
	resolvedUplink   = "/run/systemd/resolve/resolv.conf" // the real upstreams
	resolvedDBusWait = 5 * time.Second
)

// resolved configures systemd-resolved over D-Bus: the TUN link gets the
// proxy as DNS server and the resource domains as routing-only domains
// ("~corp.internal"), so only those names reach the proxy; RevertLink undoes
// it all.
type resolved struct {
	tunName  string
	stateDir string
	conn     *dbus.Conn
	uplink   string

	mu      sync.Mutex
	ifindex int
	servers []netip.AddrPort
	search  []string
	readErr error
	changed bool
	dnsWatch
}

type resolvedLinkDNS struct {
	Family  int32
	Address []byte
}

type resolvedLinkDomain struct {
	Domain      string
	RoutingOnly bool
}

func newResolved(tunName, stateDir string) (*resolved, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("connect to the system bus: %w", err)
	}
	return newResolvedOn(conn, tunName, stateDir, resolvedUplink)
}

// newResolvedOn drives the resolved reachable over conn (closed by Close or
// on error); uplink is the file listing resolved's upstream servers.
func newResolvedOn(conn *dbus.Conn, tunName, stateDir, uplink string) (*resolved, error) {
	if stateDir == "" {
		conn.Close()
		return nil, fmt.Errorf("%w: no state directory", ErrDNSConfig)
	}
	var owner string
	if err := conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, resolvedBus).Store(&owner); err != nil {
		conn.Close()
		return nil, fmt.Errorf("systemd-resolved is not running: %w", err)
	}
	c := &resolved{tunName: tunName, stateDir: stateDir, conn: conn, uplink: uplink}
	// The upstreams resolved uses, read before anything changes. The stub
	// 127.0.0.53 is not one: forwarding there would loop back to the proxy
	// for the routed domains.
	b, err := os.ReadFile(uplink)
	if err != nil {
		c.readErr = fmt.Errorf("%w: read %s: %w", ErrDNSConfig, uplink, err)
	} else {
		c.servers, c.search, _ = parseResolvConf(b)
	}
	return c, nil
}

func (c *resolved) OriginalResolvers() ([]netip.AddrPort, []string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers, c.search, c.readErr
}

func (c *resolved) SupportsSplitDNS() bool { return true }

func (c *resolved) call(method string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), resolvedDBusWait)
	defer cancel()
	obj := c.conn.Object(resolvedBus, resolvedPath)
	if err := obj.CallWithContext(ctx, resolvedManager+"."+method, 0, args...).Err; err != nil {
		return fmt.Errorf("%w: systemd-resolved %s: %w", ErrDNSConfig, method, err)
	}
	return nil
}

func (c *resolved) Set(cfg DNSConfig) error {
	if len(cfg.Nameservers) == 0 {
		return fmt.Errorf("%w: no nameserver for link %s", ErrDNSConfig, c.tunName)
	}
	ifc, err := net.InterfaceByName(c.tunName)
	if err != nil {
		return fmt.Errorf("%w: interface %s: %w", ErrDNSConfig, c.tunName, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.changed {
		if err := writeState(c.stateDir, &dnsState{Mode: modeResolved, IfName: c.tunName, IfIndex: ifc.Index}); err != nil {
			return err
		}
	}
	c.ifindex, c.changed = ifc.Index, true
	c.start(watchInterval, c.check)
	idx := int32(ifc.Index)
	var servers []resolvedLinkDNS
	for _, a := range cfg.Nameservers {
		fam := int32(unix.AF_INET)
		if a.Is6() && !a.Is4In6() {
			fam = unix.AF_INET6
		}
		servers = append(servers, resolvedLinkDNS{Family: fam, Address: a.Unmap().AsSlice()})
	}
	var domains []resolvedLinkDomain
	for _, d := range cfg.MatchDomains {
		domains = append(domains, resolvedLinkDomain{Domain: strings.TrimSuffix(d, "."), RoutingOnly: true})
	}
	fullTakeover := len(cfg.MatchDomains) == 0
	if fullTakeover {
		domains = append(domains, resolvedLinkDomain{Domain: ".", RoutingOnly: true})
	}
	for _, d := range cfg.SearchDomains {
		d = strings.TrimSuffix(d, ".")
		// The system's own search domains stay on their links: repeated
		// here they would also route those names to the proxy.
		if slices.Contains(c.search, d) {
			continue
		}
		domains = append(domains, resolvedLinkDomain{Domain: d, RoutingOnly: false})
	}
	if err := c.call("SetLinkDNS", idx, servers); err != nil {
		return err
	}
	if err := c.call("SetLinkDomains", idx, domains); err != nil {
		return err
	}
	// Older resolved (< 240) lacks SetLinkDefaultRoute; "~." does the same.
	if err := c.call("SetLinkDefaultRoute", idx, fullTakeover); err != nil && !isUnknownMethod(err) {
		return err
	}
	// The proxy's synthetic answers are not DNSSEC-signed; LLMNR and mDNS
	// make no sense on the tunnel.
	for _, m := range []struct{ method, v string }{{"SetLinkDNSSEC", "no"}, {"SetLinkLLMNR", "no"}, {"SetLinkMulticastDNS", "no"}} {
		if err := c.call(m.method, idx, m.v); err != nil && !isUnknownMethod(err) {
			return err
		}
	}
	if err := c.call("FlushCaches"); err != nil && !isUnknownMethod(err) {
		return err
	}
	return nil
}

func isUnknownMethod(err error) bool {
	var de dbus.Error
	return errors.As(err, &de) && strings.HasSuffix(de.Name, ".UnknownMethod")
}

// check reports when resolved's upstream servers change (a new network).
func (c *resolved) check() {
	b, err := os.ReadFile(c.uplink)
	if err != nil {
		return
	}
	servers, search, _ := parseResolvConf(b)
	c.mu.Lock()
	same := slices.Equal(servers, c.servers) && slices.Equal(search, c.search)
	if !same {
		c.servers, c.search, c.readErr = servers, search, nil
	}
	c.mu.Unlock()
	if !same {
		c.report(servers, search)
	}
}

func (c *resolved) Close() error {
	c.stopWatch()
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.conn.Close()
	if !c.changed {
		return nil
	}
	if err := c.call("RevertLink", int32(c.ifindex)); err != nil {
		if _, lerr := net.InterfaceByIndex(c.ifindex); lerr == nil {
			return err
		}
		// The link is gone: resolved forgot its settings with it.
	}
	c.changed = false
	return removeState(c.stateDir)
}

// restoreOS undoes a resolved link configuration left by a crashed run.
// Usually the TUN device died with the daemon and resolved dropped its
// settings; if a device of that name and index still exists, it is reverted.
func restoreOS(st *dnsState) error {
	if st.Mode != modeResolved {
		return fmt.Errorf("%w: unknown mode %q on linux", ErrDNSState, st.Mode)
	}
	ifc, err := net.InterfaceByIndex(st.IfIndex)
	if err != nil || ifc.Name != st.IfName {
		return nil
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return fmt.Errorf("%w: connect to the system bus to revert %s: %w", ErrDNSConfig, st.IfName, err)
	}
	defer conn.Close()
	c := &resolved{conn: conn}
	return c.call("RevertLink", int32(st.IfIndex))
}
