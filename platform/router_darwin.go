package platform

import (
	"fmt"
	"net/netip"
)

// NewRouter returns the Router of utun device tunName (ifconfig and route,
// as wireguard-go's tooling does).
func NewRouter(tunName string) (Router, error) {
	return newExecRouter(tunName, darwinCmds{})
}

type darwinCmds struct{}

func (darwinCmds) up(name string) error { return run("ifconfig", name, "up") }

func (darwinCmds) addAddr(name string, p netip.Prefix) error {
	if p.Addr().Is4() {
		// utun is point-to-point: the address is also the peer.
		return run("ifconfig", name, "inet", p.String(), p.Addr().String(), "alias")
	}
	return run("ifconfig", name, "inet6", p.Addr().String(), "prefixlen", fmt.Sprint(p.Bits()), "alias")
}

func (darwinCmds) delAddr(name string, p netip.Prefix) error {
	if p.Addr().Is4() {
		return run("ifconfig", name, "inet", p.Addr().String(), "-alias")
	}
	return run("ifconfig", name, "inet6", p.Addr().String(), "-alias")
}

func (darwinCmds) addRoute(name string, p netip.Prefix) error {
	return run("route", "-q", "-n", "add", "-"+family(p), p.String(), "-interface", name)
}

func (darwinCmds) delRoute(name string, p netip.Prefix) error {
	return run("route", "-q", "-n", "delete", "-"+family(p), p.String(), "-interface", name)
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "inet"
	}
	return "inet6"
}
