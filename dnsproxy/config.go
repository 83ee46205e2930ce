package dnsproxy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"postern.dev/postern/policy"
)

// Defaults used when a Config field is zero.
var (
	DefaultV4Range = netip.MustParsePrefix("100.96.0.0/12")
	DefaultV6Range = netip.MustParsePrefix("fd7a:7073:746e::/48")
)

// Default limits.
const (
	DefaultMaxInFlight     = 1024
	DefaultMaxResponseSize = 16384
	DefaultUpstreamTimeout = 3 * time.Second
	DefaultTTL             = 60
	DefaultMaxNames        = 65536
	DefaultMaxTCPConns     = 256
	// reservedOffsets is the size of the reserved head of each range (the
	// first /24 of IPv4, the first /120 of IPv6).
	reservedOffsets = 256
	// dnsOffset and dnsOffset6 place the proxy's own addresses inside the
	// reserved heads (100.96.0.53, fd7a:7073:746e::53).
	dnsOffset  = 53
	dnsOffset6 = 0x53
)

// Config configures a Proxy. Zero fields take the defaults above.
type Config struct {
	// V4Range is the IPv4 synthetic range (default 100.96.0.0/12). Its first
	// /24 is reserved: the proxy listens on its .53, nothing there is
	// allocated. At most a /22.
	V4Range netip.Prefix
	// V6Range is the IPv6 synthetic range (default fd7a:7073:746e::/48); its
	// first /120 is reserved likewise. At most a /112.
	V6Range netip.Prefix
	// IPv6 false: AAAA queries for resource names get NODATA.
	IPv6 bool
	// StateFile persists name -> address allocations (JSON) so that
	// addresses are stable across restarts. Empty: in memory only.
	StateFile string
	// Upstreams are the resolvers the system used before the daemon took
	// over (platform.OSConfigurator.OriginalResolvers). A zero port means 53.
	Upstreams []netip.AddrPort
	// SearchDomains expand single-label names (db -> db.corp.internal) when
	// the expansion is a resource name.
	SearchDomains []string
	// Logger receives diagnostics (default: slog.Default()).
	Logger *slog.Logger

	// MaxInFlight caps queries being handled at once; more are dropped
	// (default 1024).
	MaxInFlight int
	// MaxResponseSize caps every response in bytes; bigger ones are
	// truncated with TC set (default 16384; UDP answers are further capped by
	// the client's EDNS buffer size, or 512 without EDNS).
	MaxResponseSize int
	// UpstreamTimeout bounds the forwarding of one query over all upstreams;
	// after it the client gets SERVFAIL (default 3s).
	UpstreamTimeout time.Duration
	// TTL of synthetic answers in seconds (default 60).
	TTL uint32
	// MaxNames caps the allocations kept (wildcards can make many); when
	// full, the least recently used names are reclaimed (default 65536).
	MaxNames int
	// MaxTCPConns caps concurrent TCP client connections (default 256).
	MaxTCPConns int
	// OnQuery, when set, is told each query's answer rcode (-1: no answer,
	// the query was dropped) and handling time (metrics).
	OnQuery func(rcode int, took time.Duration)
}

func (c *Config) applyDefaults() error {
	if !c.V4Range.IsValid() {
		c.V4Range = DefaultV4Range
	}
	if !c.V6Range.IsValid() {
		c.V6Range = DefaultV6Range
	}
	if !c.V4Range.Addr().Is4() {
		return fmt.Errorf("%w: V4Range %s is not an IPv4 prefix", ErrConfig, c.V4Range)
	}
	if c.V4Range.Masked() != c.V4Range {
		return fmt.Errorf("%w: V4Range %s has host bits set (did you mean %s?)", ErrConfig, c.V4Range, c.V4Range.Masked())
	}
	if c.V4Range.Bits() > 22 {
		return fmt.Errorf("%w: V4Range %s is too small: at least a /22 is needed (the first /24 is reserved)", ErrConfig, c.V4Range)
	}
	if !c.V6Range.Addr().Is6() || c.V6Range.Addr().Is4In6() {
		return fmt.Errorf("%w: V6Range %s is not an IPv6 prefix", ErrConfig, c.V6Range)
	}
	if c.V6Range.Masked() != c.V6Range {
		return fmt.Errorf("%w: V6Range %s has host bits set (did you mean %s?)", ErrConfig, c.V6Range, c.V6Range.Masked())
	}
	if c.V6Range.Bits() > 112 {
		return fmt.Errorf("%w: V6Range %s is too small: at least a /112 is needed (the first /120 is reserved)", ErrConfig, c.V6Range)
	}
	ups, err := checkUpstreams(c.Upstreams, c.V4Range, c.V6Range)
	if err != nil {
		return err
	}
	c.Upstreams = ups
	search := make([]string, 0, len(c.SearchDomains))
	for _, s := range c.SearchDomains {
		s = policy.CanonicalName(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		if _, err := policy.ParseAddress(s); err != nil || strings.HasPrefix(s, "*") {
			return fmt.Errorf("%w: search domain %q is not a DNS name", ErrConfig, s)
		}
		search = append(search, s)
	}
	c.SearchDomains = search
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxInFlight < 0 || c.MaxResponseSize < 0 || c.UpstreamTimeout < 0 || c.MaxNames < 0 || c.MaxTCPConns < 0 {
		return fmt.Errorf("%w: limits must not be negative", ErrConfig)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxResponseSize == 0 {
		c.MaxResponseSize = DefaultMaxResponseSize
	}
	if c.MaxResponseSize < 512 {
		return fmt.Errorf("%w: MaxResponseSize %d is below the DNS minimum of 512", ErrConfig, c.MaxResponseSize)
	}
	if c.MaxResponseSize > 65535 {
		c.MaxResponseSize = 65535
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxNames == 0 {
		c.MaxNames = DefaultMaxNames
	}
	if c.MaxTCPConns == 0 {
		c.MaxTCPConns = DefaultMaxTCPConns
	}
	return nil
}

// checkUpstreams validates upstream resolvers (port 0 means 53) and refuses
// any inside the synthetic ranges: the proxy would query itself.
func checkUpstreams(in []netip.AddrPort, v4, v6 netip.Prefix) ([]netip.AddrPort, error) {
	ups := make([]netip.AddrPort, 0, len(in))
	for _, u := range in {
		if !u.Addr().IsValid() {
			return nil, fmt.Errorf("%w: upstream %q is not an address", ErrConfig, u)
		}
		a := u.Addr().Unmap()
		if v4.Contains(a) || v6.Contains(a) {
			return nil, fmt.Errorf("%w: upstream %s lies inside the synthetic range (the proxy would query itself); pass the resolvers the system used before", ErrConfig, u)
		}
		port := u.Port()
		if port == 0 {
			port = 53
		}
		ap := netip.AddrPortFrom(a, port)
		if !slices.Contains(ups, ap) {
			ups = append(ups, ap)
		}
	}
	return ups, nil
}
