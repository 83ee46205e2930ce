package platform

import (
	"net/netip"
)

// NewRouter returns the Router of wintun device tunName. Addresses and
// routes go through netsh (store=active: they vanish with the device and at
// reboot). golang.zx2c4.com/wireguard/windows (winipcfg) is not a
// dependency of this module.
func NewRouter(tunName string) (Router, error) {
	return newExecRouter(tunName, windowsCmds{})
}

type windowsCmds struct{}

func ipv(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "ipv4"
	}
	return "ipv6"
}

func (windowsCmds) up(name string) error { return nil } // wintun adapters come up by themselves

// ifArg names the interface: netsh's ipv4 context calls it "name", the
// ipv6 context "interface".
func ifArg(p netip.Prefix, name string) string {
	if p.Addr().Is4() {
		return "name=" + name
	}
	return "interface=" + name
}

func (windowsCmds) addAddr(name string, p netip.Prefix) error {
	return run("netsh", "interface", ipv(p), "add", "address", ifArg(p, name), "address="+p.String(), "store=active")
}

func (windowsCmds) delAddr(name string, p netip.Prefix) error {
	return run("netsh", "interface", ipv(p), "delete", "address", ifArg(p, name), "address="+p.Addr().String())
}

func (windowsCmds) addRoute(name string, p netip.Prefix) error {
	return run("netsh", "interface", ipv(p), "add", "route", "prefix="+p.String(), "interface="+name, "metric=0", "store=active")
}

func (windowsCmds) delRoute(name string, p netip.Prefix) error {
	return run("netsh", "interface", ipv(p), "delete", "route", "prefix="+p.String(), "interface="+name, "store=active")
}
