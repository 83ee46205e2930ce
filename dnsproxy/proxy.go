package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/platform"
)

// Proxy is the client's DNS server. Create it with New, give it the
// resource list with SetResources, and run it with Serve.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	alloc *allocator
	fwd   *forwarder
	limit *limitHandler
	chain Handler

	table      atomic.Pointer[table]
	connectors atomic.Pointer[map[string][]controlapi.ConnectorInfo] // network -> connectors
}

// saveInterval is how often Serve writes changed allocations to the state
// file (and once more when it ends).
const saveInterval = 2 * time.Second

// maxQuerySize is the read buffer for UDP queries: real queries are far
// smaller; a bigger buffer per packet would only cost memory under load.
const maxQuerySize = 4096

// New checks cfg, loads the state file and builds the handler chain.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger}
	p.alloc = newAllocator(cfg.V4Range, cfg.V6Range, cfg.MaxNames, 2*time.Duration(cfg.TTL)*time.Second, cfg.StateFile, cfg.Logger)
	if err := p.alloc.load(); err != nil {
		return nil, err
	}
	p.fwd = newForwarder(cfg.Upstreams, cfg.UpstreamTimeout, cfg.Logger)
	p.table.Store(buildTable(nil, cfg.Logger))
	p.limit = &limitHandler{sem: make(chan struct{}, cfg.MaxInFlight)}
	p.limit.Next = &syntheticHandler{p: p, Next: &searchHandler{p: p, Next: &forwardHandler{p: p}}}
	p.chain = p.limit
	return p, nil
}

// SetResources replaces the resources whose names the proxy answers: only
// these (their exact names, *.wildcards and aliases); every other name is
// forwarded upstream. Safe to call at any time.
func (p *Proxy) SetResources(rs []controlapi.PolicyResource) {
	p.table.Store(buildTable(rs, p.log))
}

// SetUpstreams replaces the resolvers non-resource names are forwarded to
// (the network changed: a new DHCP lease, another Wi-Fi). Addresses inside
// the synthetic ranges are refused; state is untouched on error.
func (p *Proxy) SetUpstreams(ups []netip.AddrPort) error {
	checked, err := checkUpstreams(ups, p.cfg.V4Range, p.cfg.V6Range)
	if err != nil {
		return err
	}
	p.fwd.setUpstreams(checked)
	p.log.Info("dns: upstream resolvers changed", "upstreams", checked)
	return nil
}

// SetConnectors tells the proxy which connectors serve which remote network
// (for Explain). Safe to call at any time.
func (p *Proxy) SetConnectors(cs []controlapi.ConnectorInfo) {
	m := make(map[string][]controlapi.ConnectorInfo)
	for _, c := range cs {
		m[c.Network] = append(m[c.Network], c)
	}
	p.connectors.Store(&m)
}

// Handler returns the proxy's handler chain, for serving it on another
// transport (e.g. a netstack socket wrapped by miekg/dns).
func (p *Proxy) Handler() Handler { return p.chain }

// Dropped counts queries dropped because MaxInFlight were being handled.
func (p *Proxy) Dropped() uint64 { return p.limit.dropped.Load() }

// Serve answers DNS over pc (UDP) and ln (TCP), either of which may be nil,
// until ctx ends; then it closes both, waits for the queries being handled
// and saves the allocations. It returns nil when ctx ended and an error when
// a transport failed.
func (p *Proxy) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	if pc == nil && ln == nil {
		return fmt.Errorf("%w: Serve needs a packet conn or a listener", ErrConfig)
	}
	handler := observe(dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { p.chain.ServeDNS(ctx, w, r) }), p.cfg.OnQuery)
	var servers []*dns.Server
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: handler, UDPSize: maxQuerySize})
	}
	if ln != nil {
		servers = append(servers, &dns.Server{
			Listener: &limitListener{Listener: ln, sem: make(chan struct{}, p.cfg.MaxTCPConns)},
			Handler:  handler, MaxTCPQueries: -1,
		})
	}
	group := StartServers(servers...)
	ticker := time.NewTicker(saveInterval)
	defer ticker.Stop()
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-group.Stopped():
			if err == nil {
				err = errors.New("server stopped")
			}
			serveErr = fmt.Errorf("dns serve: %w", err)
			break loop
		case <-ticker.C:
			if err := p.alloc.save(); err != nil {
				p.log.Warn("dns: save allocations", "err", err)
			}
		}
	}
	group.Stop(5 * time.Second)
	p.fwd.close()
	if err := p.alloc.save(); err != nil {
		return errors.Join(serveErr, err)
	}
	return serveErr
}

// Save writes changed allocations to the state file now (Serve also does so
// periodically and when it ends).
func (p *Proxy) Save() error { return p.alloc.save() }

// allocate returns name's synthetic addresses, allocating them if needed.
func (p *Proxy) allocate(name string) (netip.Addr, netip.Addr, error) {
	off, err := p.alloc.get(name)
	if err != nil {
		return netip.Addr{}, netip.Addr{}, err
	}
	a4, a6 := p.alloc.addrs(off)
	return a4, a6, nil
}

// inRanges reports whether ip lies in a synthetic range in use.
func (p *Proxy) inRanges(ip netip.Addr) bool {
	ip = ip.Unmap()
	return p.cfg.V4Range.Contains(ip) || (p.cfg.IPv6 && p.cfg.V6Range.Contains(ip))
}

// Match is what a synthetic address stands for.
type Match struct {
	// Name is the name the connector must resolve when a flow to the address
	// opens: the queried name, or for an alias the resource's address.
	Name string
	// Queried is the name that was asked for (differs from Name for aliases).
	Queried    string
	ResourceID string
	Resource   string // resource name
	Network    string // remote network serving it
	Pattern    string // the address or alias that matched ("*.corp.internal")
}

// Resolve maps a synthetic address back to what it stands for. ok is false
// when the address is not allocated, or its name is no longer covered by a
// resource the user may use.
func (p *Proxy) Resolve(ip netip.Addr) (Match, bool) {
	if !p.inRanges(ip) {
		return Match{}, false
	}
	off, ok := p.alloc.offsetOf(ip)
	if !ok {
		return Match{}, false
	}
	name, ok := p.alloc.nameAt(off)
	if !ok {
		return Match{}, false
	}
	rl := p.table.Load().match(name)
	if rl == nil || rl.fixed.IsValid() {
		return Match{}, false
	}
	return Match{
		Name: rl.dialName(name), Queried: name, ResourceID: rl.res.ID,
		Resource: rl.res.Name, Network: rl.res.Network, Pattern: rl.pattern,
	}, true
}

// Lookup maps a synthetic address to the name the connector must resolve
// (for an alias: the resource's address) and the resource's ID; see Resolve.
func (p *Proxy) Lookup(ip netip.Addr) (name, resourceID string, ok bool) {
	m, ok := p.Resolve(ip)
	return m.Name, m.ResourceID, ok
}

// SyntheticAddrs lists the addresses allocated so far to names of the
// resource with the given ID (for the resource list).
func (p *Proxy) SyntheticAddrs(resourceID string) []netip.Addr {
	t := p.table.Load()
	var offs []uint32
	p.alloc.each(func(name string, off uint32) {
		if rl := t.match(name); rl != nil && rl.res.ID == resourceID && !rl.fixed.IsValid() {
			offs = append(offs, off)
		}
	})
	slices.Sort(offs)
	var out []netip.Addr
	for _, off := range offs {
		a4, a6 := p.alloc.addrs(off)
		out = append(out, a4)
		if p.cfg.IPv6 {
			out = append(out, a6)
		}
	}
	return out
}

// Ranges returns the prefixes to route into the tunnel for name resources:
// the IPv4 range, and the IPv6 range when IPv6 is on.
func (p *Proxy) Ranges() []netip.Prefix {
	if p.cfg.IPv6 {
		return []netip.Prefix{p.cfg.V4Range, p.cfg.V6Range}
	}
	return []netip.Prefix{p.cfg.V4Range}
}

// Addrs returns the proxy's own addresses (100.96.0.53 and, with IPv6,
// fd7a:7073:746e::53 for the default ranges): what the OS resolver is
// pointed at and what the daemon listens on.
func (p *Proxy) Addrs() []netip.Addr {
	a4, _ := p.alloc.addrs(dnsOffset)
	_, a6 := p.alloc.addrs(dnsOffset6)
	if p.cfg.IPv6 {
		return []netip.Addr{a4, a6}
	}
	return []netip.Addr{a4}
}

// MatchDomains returns the split-DNS domains the OS should send to the
// proxy: every resource name, alias and wildcard suffix the user may use
// (names below another one are left out), and the reverse zones of the
// synthetic ranges (for PTR). Feed it to platform.DNSConfig.MatchDomains
// after each SetResources.
func (p *Proxy) MatchDomains() []string {
	out := p.table.Load().domains()
	for _, r := range p.Ranges() {
		out = append(out, reverseZones(r)...)
	}
	return out
}

// CheckRangeConflicts refuses ranges that overlap a route or address
// already on the machine, naming the conflict (see platform).
func CheckRangeConflicts(ranges []netip.Prefix) error {
	return platform.CheckRangeConflicts(ranges)
}

// limitListener caps concurrent TCP connections: over the cap, new
// connections are closed at once.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
