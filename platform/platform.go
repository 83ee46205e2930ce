// Package platform holds one small interface per OS subsystem the client daemon
// touches: the TUN device, routes and addresses, and DNS configuration. Each has
// a Linux, macOS and Windows implementation in its own file and a stub for
// other systems.
package platform

import (
	"errors"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// ErrUnsupported is returned by the stubs on systems Postern does not support.
// The package's other sentinel errors are in errors.go.
var ErrUnsupported = errors.New("platform: not supported on this operating system")

// Router assigns addresses to the TUN device and routes the resource ranges to
// it (split tunnel: nothing else).
type Router interface {
	// Set makes the device's addresses and routes exactly those given,
	// adding and removing the difference.
	Set(addrs []netip.Prefix, routes []netip.Prefix) error
	// Close removes everything Set added.
	Close() error
}

// DNSConfig is what the daemon asks the OS resolver to do.
type DNSConfig struct {
	// Nameservers: the daemon's DNS proxy addresses.
	Nameservers []netip.Addr
	// MatchDomains are routed to Nameservers (split DNS), e.g. "corp.internal".
	// Empty with a full takeover means all names go to Nameservers.
	MatchDomains []string
	// SearchDomains are appended to short names.
	SearchDomains []string
}

// OSConfigurator installs and reverts the daemon's DNS configuration.
type OSConfigurator interface {
	// OriginalResolvers reports the resolvers and search domains the system
	// used before Postern changed anything (for forwarding).
	OriginalResolvers() (servers []netip.AddrPort, search []string, err error)
	// SupportsSplitDNS reports whether MatchDomains can be honoured; when not,
	// the daemon takes over all DNS and forwards other names itself.
	SupportsSplitDNS() bool
	// Set applies cfg (replacing any earlier Set).
	Set(cfg DNSConfig) error
	// Close restores the original configuration.
	Close() error
}

// TUNOptions configures CreateTUN.
type TUNOptions struct {
	Name string
	MTU  int
}

// CreateTUN creates the TUN device (wireguard/tun; with offloads on Linux).
func CreateTUN(o TUNOptions) (tun.Device, error) { return createTUN(o) }

// OriginalWatcher is implemented by OSConfigurators that notice when the
// system changes its own resolvers while Postern's configuration is in place
// (a DHCP client or NetworkManager rewriting /etc/resolv.conf after a network
// change). They keep Postern's configuration applied and report the new
// original resolvers, which the daemon hands to the DNS proxy
// (dnsproxy.Proxy.SetUpstreams).
type OriginalWatcher interface {
	// OnOriginalChange registers f (replacing any earlier one); f is called
	// from another goroutine after each change.
	OnOriginalChange(f func(servers []netip.AddrPort, search []string))
}
