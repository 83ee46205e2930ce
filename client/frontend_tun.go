package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/dnsproxy"
	"postern.dev/postern/localapi"
	"postern.dev/postern/netstack"
	"postern.dev/postern/platform"
)

// DNSProxy is the DNS proxy the TUN front-end runs (package dnsproxy).
type DNSProxy interface {
	SetResources([]controlapi.PolicyResource)
	SetConnectors([]controlapi.ConnectorInfo)
	Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error
	Lookup(ip netip.Addr) (name, resourceID string, ok bool)
	SyntheticAddrs(resourceID string) []netip.Addr
	Explain(ctx context.Context, name string) localapi.DNSExplain
	// Ranges are the synthetic ranges to route into the TUN.
	Ranges() []netip.Prefix
	// Addrs are the proxy's own addresses, assigned to the TUN.
	Addrs() []netip.Addr
	// MatchDomains are the split-DNS domains for the OS resolver.
	MatchDomains() []string
}

// DNSProxyConfig is what the TUN front-end passes to TUNConfig.NewDNSProxy.
type DNSProxyConfig struct {
	V4Range, V6Range netip.Prefix
	IPv6             bool
	StateFile        string
	Upstreams        []netip.AddrPort
	SearchDomains    []string
	Logger           *slog.Logger
	OnQuery          func(rcode int, took time.Duration) // dnsproxy.Config.OnQuery
}

// TUNConfig configures the TUN front-end. Nil constructors take the
// platform's and dnsproxy's.
type TUNConfig struct {
	Name     string
	MTU      int
	StateDir string
	// IPv4Only turns IPv6 off (posternd --ipv6=false). IPv6 is on by
	// default: AAAA answers for resource names, the IPv6 synthetic range
	// and IPv6 address and CIDR resources routed into the TUN. With
	// IPv4Only, AAAA queries for resource names get NODATA and no IPv6
	// prefix is routed.
	IPv4Only bool
	// V4Range and V6Range override the synthetic ranges (zero: dnsproxy's).
	V4Range, V6Range netip.Prefix
	Logger           *slog.Logger
	// OnDNSQuery, when set, sees every DNS query's rcode and time (metrics).
	OnDNSQuery func(rcode int, took time.Duration)

	CreateTUN         func(name string, mtu int) (tun.Device, error)
	NewRouter         func(tunName string) (platform.Router, error)
	NewOSConfigurator func(tunName, stateDir string) (platform.OSConfigurator, error)
	NewDNSProxy       func(DNSProxyConfig) (DNSProxy, error)
	RestoreAfterCrash func(stateDir string) error
	// CheckRangeConflicts refuses synthetic ranges that overlap routes or
	// addresses already on the machine (other than on the TUN itself).
	CheckRangeConflicts func(ranges []netip.Prefix, tunName string) error
	// ListenDNS opens the DNS proxy's UDP and TCP listeners on addr, bound
	// to the TUN device tunName (default dnsproxy.Listen). Tests without
	// root listen elsewhere.
	ListenDNS func(ctx context.Context, addr netip.AddrPort, tunName string) (net.PacketConn, net.Listener, error)
}

// TUNFrontend captures resource traffic with a TUN device and gVisor.
type TUNFrontend struct {
	cfg TUNConfig
	log *slog.Logger

	dev     tun.Device
	name    string
	ns      *netstack.Stack
	router  platform.Router
	osc     platform.OSConfigurator
	dns     DNSProxy
	dnsAddr netip.Addr
	pc      net.PacketConn
	ln      net.Listener
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu        sync.Mutex
	routes    []netip.Prefix
	domains   []string
	search    []string
	splitDNS  bool
	lastError string
}

// NewTUNFrontend checks cfg and returns a front-end to Start.
func NewTUNFrontend(cfg TUNConfig) (*TUNFrontend, error) {
	if cfg.CreateTUN == nil {
		cfg.CreateTUN = func(name string, mtu int) (tun.Device, error) {
			return platform.CreateTUN(platform.TUNOptions{Name: name, MTU: mtu})
		}
	}
	if cfg.NewRouter == nil {
		cfg.NewRouter = platform.NewRouter
	}
	if cfg.NewOSConfigurator == nil {
		cfg.NewOSConfigurator = platform.NewOSConfigurator
	}
	if cfg.NewDNSProxy == nil {
		cfg.NewDNSProxy = newDNSProxy
	}
	if cfg.RestoreAfterCrash == nil {
		cfg.RestoreAfterCrash = platform.RestoreAfterCrash
	}
	if cfg.CheckRangeConflicts == nil {
		cfg.CheckRangeConflicts = platform.CheckRangeConflictsExcept
	}
	if cfg.ListenDNS == nil {
		cfg.ListenDNS = dnsproxy.Listen
	}
	if cfg.MTU == 0 {
		cfg.MTU = netstack.DefaultMTU
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &TUNFrontend{cfg: cfg, log: log}, nil
}

// Start implements Frontend.
func (f *TUNFrontend) Start(ctx context.Context, d *Daemon) (err error) {
	defer func() {
		if err != nil {
			_ = f.Close()
		}
	}()
	f.dev, err = f.cfg.CreateTUN(f.cfg.Name, f.cfg.MTU)
	if err != nil {
		return fmt.Errorf("create TUN device %q (posternd needs root or CAP_NET_ADMIN; --socks5 works without): %w", f.cfg.Name, err)
	}
	if f.name, err = f.dev.Name(); err != nil {
		return fmt.Errorf("TUN device name: %w", err)
	}
	f.log.Info("TUN device created", "requested", f.cfg.Name, "dev", f.name)
	if f.router, err = f.cfg.NewRouter(f.name); err != nil {
		return fmt.Errorf("router for %s: %w", f.name, err)
	}
	// A previous run killed before it could restore the resolver leaves a
	// backup: put the original back before configuring anything.
	if err := f.cfg.RestoreAfterCrash(f.cfg.StateDir); err != nil {
		f.log.Warn("restore DNS left changed by a previous run", "err", err)
	}
	if f.osc, err = f.cfg.NewOSConfigurator(f.name, f.cfg.StateDir); err != nil {
		return fmt.Errorf("DNS configurator for %s: %w", f.name, err)
	}
	upstreams, search, err := f.osc.OriginalResolvers()
	if err != nil {
		f.log.Warn("cannot read the system's resolvers; only resource names will resolve", "err", err)
	}
	f.search = search
	f.splitDNS = f.osc.SupportsSplitDNS()
	newDNS := func() (err error) {
		f.dns, err = f.cfg.NewDNSProxy(DNSProxyConfig{
			V4Range: f.cfg.V4Range, V6Range: f.cfg.V6Range, IPv6: !f.cfg.IPv4Only,
			StateFile: filepath.Join(f.cfg.StateDir, "dns-state.json"), Upstreams: upstreams, SearchDomains: search, Logger: f.log,
			OnQuery: f.cfg.OnDNSQuery,
		})
		if err != nil {
			return fmt.Errorf("DNS proxy: %w", err)
		}
		return nil
	}
	if err := newDNS(); err != nil {
		return err
	}
	if err := f.cfg.CheckRangeConflicts(f.dns.Ranges(), f.name); err != nil {
		return fmt.Errorf("synthetic address range: %w", err)
	}
	if err := f.router.Set(f.tunAddrs(), f.allRoutes(nil)); err != nil {
		if f.cfg.IPv4Only {
			return fmt.Errorf("set routes on %s: %w", f.name, err)
		}
		// IPv6 is on by default; a machine with IPv6 disabled refuses the
		// IPv6 address or route. Run IPv4 only rather than not at all.
		f.log.Warn("cannot configure IPv6 on the TUN device; running IPv4 only (posternd --ipv6=false says so up front)", "dev", f.name, "err", err)
		f.cfg.IPv4Only = true
		if err := newDNS(); err != nil {
			return err
		}
		if err := f.router.Set(f.tunAddrs(), f.allRoutes(nil)); err != nil {
			return fmt.Errorf("set routes on %s: %w", f.name, err)
		}
	}
	f.dnsAddr = f.dns.Addrs()[0]
	f.watchOriginalResolvers()
	dnsAP := netip.AddrPortFrom(f.dnsAddr, 53)
	// Only queries from this machine or the TUN: the proxy's address is no
	// open resolver for the networks the machine sits on.
	if f.pc, f.ln, err = f.cfg.ListenDNS(ctx, dnsAP, f.name); err != nil {
		return fmt.Errorf("DNS proxy: %w", err)
	}
	h := newFlowHandler(ctx, d)
	if f.ns, err = netstack.New(f.dev, h, netstack.Config{MTU: f.cfg.MTU, Logger: f.log}); err != nil {
		return err
	}
	ctx, f.cancel = context.WithCancel(ctx)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := f.dns.Serve(ctx, f.pc, f.ln); err != nil && ctx.Err() == nil {
			f.log.Warn("DNS proxy stopped", "err", err)
		}
	}()
	f.log.Info("TUN up", "dev", f.name, "dns", dnsAP)
	return nil
}

// tunAddrs are the addresses assigned to the device: the DNS proxy's.
func (f *TUNFrontend) tunAddrs() []netip.Prefix {
	var out []netip.Prefix
	for _, a := range f.dns.Addrs() {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

func newDNSProxy(c DNSProxyConfig) (DNSProxy, error) {
	return dnsproxy.New(dnsproxy.Config{
		V4Range: c.V4Range, V6Range: c.V6Range, IPv6: c.IPv6, StateFile: c.StateFile,
		Upstreams: c.Upstreams, SearchDomains: c.SearchDomains, Logger: c.Logger, OnQuery: c.OnQuery,
	})
}

// allRoutes is what the TUN routes: the synthetic ranges and the address
// and CIDR resources (IPv4 ones only with IPv4Only).
func (f *TUNFrontend) allRoutes(extra []netip.Prefix) []netip.Prefix {
	out := slices.Clone(f.dns.Ranges())
	for _, p := range extra {
		if f.cfg.IPv4Only && p.Addr().Is6() && !p.Addr().Is4In6() {
			continue
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Update implements Frontend: the DNS proxy learns the names, the router the
// address resources, the OS resolver the match domains.
func (f *TUNFrontend) Update(v *PolicyView) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dns == nil {
		return
	}
	f.dns.SetResources(v.Resources)
	f.dns.SetConnectors(v.Connectors)
	routes := f.allRoutes(v.Routes)
	if !slices.Equal(routes, f.routes) {
		if err := f.router.Set(f.tunAddrs(), routes); err != nil {
			f.log.Error("set routes", "err", err)
			f.lastError = err.Error()
		} else {
			f.routes = routes
		}
	}
	domains := f.dns.MatchDomains()
	sort.Strings(domains)
	if !slices.Equal(domains, f.domains) || f.domains == nil {
		cfg := platform.DNSConfig{Nameservers: f.dns.Addrs(), SearchDomains: f.search}
		if f.splitDNS {
			cfg.MatchDomains = domains
		}
		if err := f.osc.Set(cfg); err != nil {
			f.log.Error("configure system DNS", "err", err)
			f.lastError = err.Error()
		} else {
			f.domains = domains
			if f.domains == nil {
				f.domains = []string{}
			}
		}
	}
}

// Names implements Frontend.
func (f *TUNFrontend) Names() NameMapper {
	if f.dns == nil {
		return nil
	}
	return f.dns
}

// Explain implements Frontend.
func (f *TUNFrontend) Explain(ctx context.Context, name string) (localapi.DNSExplain, bool) {
	if f.dns == nil {
		return localapi.DNSExplain{}, false
	}
	return f.dns.Explain(ctx, name), true
}

// Describe implements Frontend.
func (f *TUNFrontend) Describe(s *localapi.Status) {
	s.TUN = f.name
	if f.dnsAddr.IsValid() {
		s.DNS = f.dnsAddr.String()
	}
	if f.dns != nil {
		for _, r := range f.dns.Ranges() {
			s.Ranges = append(s.Ranges, r.String())
		}
	}
}

// Close implements Frontend: it restores DNS, removes routes and the device.
func (f *TUNFrontend) Close() error {
	var errs []error
	if f.cancel != nil {
		f.cancel()
	}
	if f.pc != nil {
		_ = f.pc.Close()
	}
	if f.ln != nil {
		_ = f.ln.Close()
	}
	f.wg.Wait()
	if f.osc != nil {
		if err := f.osc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("restore DNS: %w", err))
		}
		f.osc = nil
	}
	if f.router != nil {
		if err := f.router.Close(); err != nil {
			errs = append(errs, fmt.Errorf("remove routes: %w", err))
		}
		f.router = nil
	}
	if f.ns != nil {
		if err := f.ns.Close(); err != nil && !isClosed(err) {
			errs = append(errs, err)
		}
		f.ns = nil
	} else if f.dev != nil {
		_ = f.dev.Close()
	}
	f.dev = nil
	return errors.Join(errs...)
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// upstreamSetter is the part of dnsproxy.Proxy that changes where other
// names are forwarded.
type upstreamSetter interface {
	SetUpstreams([]netip.AddrPort) error
}

// watchOriginalResolvers makes forwarding follow network changes: when the
// OS configurator notices the system changed its own resolvers (DHCP on a new
// network, NetworkManager rewriting resolv.conf), the DNS proxy forwards to
// the new ones.
func (f *TUNFrontend) watchOriginalResolvers() {
	w, ok := f.osc.(platform.OriginalWatcher)
	if !ok {
		return
	}
	up, ok := f.dns.(upstreamSetter)
	if !ok {
		return
	}
	log := f.log
	w.OnOriginalChange(func(servers []netip.AddrPort, search []string) {
		if err := up.SetUpstreams(servers); err != nil {
			log.Warn("follow the system's new resolvers", "servers", servers, "err", err)
			return
		}
		log.Info("system resolvers changed; forwarding to the new ones", "servers", servers, "search", search)
	})
}
