//go:build darwin || windows

package platform

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// execRouter keeps the device's addresses and routes in line with Set by
// running the OS tools; the per-OS add/del commands come from osRouteCmds.
type execRouter struct {
	name string
	cmds osRouteCmds

	mu     sync.Mutex
	addrs  map[netip.Prefix]bool
	routes map[netip.Prefix]bool
}

// newExecRouter is the Router of the existing device name, driven by cmds.
func newExecRouter(name string, cmds osRouteCmds) (Router, error) {
	if _, err := net.InterfaceByName(name); err != nil {
		return nil, fmt.Errorf("%w: interface %s: %w", ErrRoute, name, err)
	}
	return &execRouter{name: name, cmds: cmds, addrs: map[netip.Prefix]bool{}, routes: map[netip.Prefix]bool{}}, nil
}

type osRouteCmds interface {
	up(name string) error
	addAddr(name string, p netip.Prefix) error
	delAddr(name string, p netip.Prefix) error
	addRoute(name string, p netip.Prefix) error
	delRoute(name string, p netip.Prefix) error
}

func (r *execRouter) Set(addrs []netip.Prefix, routes []netip.Prefix) error {
	for _, p := range append(append([]netip.Prefix(nil), addrs...), routes...) {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid prefix %v", ErrRoute, p)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cmds.up(r.name); err != nil {
		return fmt.Errorf("%w: %w", ErrRoute, err)
	}
	wantA := toSet(addrs)
	for p := range wantA {
		if !r.addrs[p] {
			if err := r.cmds.addAddr(r.name, p); err != nil {
				return fmt.Errorf("%w: %w", ErrRoute, err)
			}
			r.addrs[p] = true
		}
	}
	wantR := map[netip.Prefix]bool{}
	for _, p := range routes {
		wantR[p.Masked()] = true
	}
	for p := range wantR {
		if !r.routes[p] {
			if err := r.cmds.addRoute(r.name, p); err != nil {
				return fmt.Errorf("%w: %w", ErrRoute, err)
			}
			r.routes[p] = true
		}
	}
	var errs []error
	for p := range r.routes {
		if !wantR[p] {
			if err := r.cmds.delRoute(r.name, p); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(r.routes, p)
		}
	}
	for p := range r.addrs {
		if !wantA[p] {
			if err := r.cmds.delAddr(r.name, p); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(r.addrs, p)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrRoute, errors.Join(errs...))
	}
	return nil
}

func (r *execRouter) Close() error { return r.Set(nil, nil) }

func toSet(ps []netip.Prefix) map[netip.Prefix]bool {
	m := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		m[p] = true
	}
	return m
}
