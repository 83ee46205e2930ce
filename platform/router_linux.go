package platform

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProtocol marks Postern's routes (ip route shows "proto 88"), so they
// are recognisable.
const routeProtocol = netlink.RouteProtocol(88)

type linuxRouter struct {
	name string

	mu     sync.Mutex
	addrs  map[netip.Prefix]bool
	routes map[netip.Prefix]bool
}

// NewRouter returns the Router of TUN device tunName (netlink).
func NewRouter(tunName string) (Router, error) {
	if _, err := netlink.LinkByName(tunName); err != nil {
		return nil, fmt.Errorf("%w: interface %s: %w", ErrRoute, tunName, err)
	}
	return &linuxRouter{name: tunName, addrs: map[netip.Prefix]bool{}, routes: map[netip.Prefix]bool{}}, nil
}

func (r *linuxRouter) Set(addrs []netip.Prefix, routes []netip.Prefix) error {
	for _, p := range append(slicesConcat(addrs), routes...) {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid prefix %v", ErrRoute, p)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	link, err := netlink.LinkByName(r.name)
	if err != nil {
		return fmt.Errorf("%w: interface %s: %w", ErrRoute, r.name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("%w: set %s up: %w", ErrRoute, r.name, err)
	}
	wantA := toSet(addrs)
	for p := range wantA {
		if r.addrs[p] {
			continue
		}
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNetFromPrefix(p)}); err != nil {
			return fmt.Errorf("%w: add address %s to %s: %w", ErrRoute, p, r.name, err)
		}
		r.addrs[p] = true
	}
	wantR := make(map[netip.Prefix]bool)
	for _, p := range routes {
		wantR[p.Masked()] = true
	}
	for p := range wantR {
		if r.routes[p] {
			continue
		}
		if err := netlink.RouteReplace(r.route(link, p)); err != nil {
			return fmt.Errorf("%w: add route %s dev %s: %w", ErrRoute, p, r.name, err)
		}
		r.routes[p] = true
	}
	var errs []error
	for p := range r.routes {
		if !wantR[p] {
			if err := netlink.RouteDel(r.route(link, p)); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
				continue
			}
			delete(r.routes, p)
		}
	}
	for p := range r.addrs {
		if !wantA[p] {
			if err := netlink.AddrDel(link, &netlink.Addr{IPNet: ipNetFromPrefix(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("delete address %s: %w", p, err))
				continue
			}
			delete(r.addrs, p)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s: %w", ErrRoute, r.name, errors.Join(errs...))
	}
	return nil
}

func (r *linuxRouter) route(link netlink.Link, p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNetFromPrefix(p),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  routeProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
}

func (r *linuxRouter) Close() error {
	err := r.Set(nil, nil)
	if err != nil {
		if _, lerr := netlink.LinkByName(r.name); lerr != nil {
			return nil // the device is gone, and with it its routes
		}
	}
	return err
}

func toSet(ps []netip.Prefix) map[netip.Prefix]bool {
	m := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		m[p] = true
	}
	return m
}

func slicesConcat(a []netip.Prefix) []netip.Prefix { return append([]netip.Prefix(nil), a...) }
