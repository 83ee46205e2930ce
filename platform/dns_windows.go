package platform

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
)

// nrptBase is the local Name Resolution Policy Table (the one used when no
// group policy NRPT is set), read by the DNS Client service.
const (
	nrptBase    = `SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig`
	nrptPrefix  = "Postern-"
	nrptComment = "Added by posternd (Postern); removed when it stops."
	// nrptNamesPerRule keeps each rule's Name list to a size Windows accepts.
	nrptNamesPerRule = 50
)

// nrpt configures Windows split DNS with NRPT rules: the match domains go
// to the proxy; everything else keeps the adapters' resolvers.
type nrpt struct {
	tunName  string
	stateDir string

	mu   sync.Mutex
	keys []string
}

// NewOSConfigurator returns the Windows DNS configurator (NRPT rules).
func NewOSConfigurator(tunName, stateDir string) (OSConfigurator, error) {
	if err := takeOverDNSState(stateDir); err != nil {
		return nil, err
	}
	return &nrpt{tunName: tunName, stateDir: stateDir}, nil
}

// OriginalResolvers lists the DNS servers and suffixes of the adapters that
// are up (not loopback, not Postern's own).
func (c *nrpt) OriginalResolvers() ([]netip.AddrPort, []string, error) {
	size := uint32(15000)
	var buf []byte
	for i := 0; i < 3; i++ {
		buf = make([]byte, size)
		err := windows.GetAdaptersAddresses(windows.AF_UNSPEC, windows.GAA_FLAG_SKIP_ANYCAST|windows.GAA_FLAG_SKIP_MULTICAST, 0, (*windows.IpAdapterAddresses)(unsafe.Pointer(&buf[0])), &size)
		if err == nil {
			break
		}
		if !errors.Is(err, windows.ERROR_BUFFER_OVERFLOW) || i == 2 {
			return nil, nil, fmt.Errorf("%w: GetAdaptersAddresses: %w", ErrDNSConfig, err)
		}
	}
	var servers []netip.AddrPort
	var search []string
	for a := (*windows.IpAdapterAddresses)(unsafe.Pointer(&buf[0])); a != nil; a = a.Next {
		if a.OperStatus != windows.IfOperStatusUp || a.IfType == windows.IF_TYPE_SOFTWARE_LOOPBACK {
			continue
		}
		if windows.UTF16PtrToString(a.FriendlyName) == c.tunName {
			continue
		}
		for d := a.FirstDnsServerAddress; d != nil; d = d.Next {
			ip, ok := netip.AddrFromSlice(d.Address.IP())
			// fec0:0:0:ffff::1-3 are Windows' placeholders when an adapter
			// has no IPv6 DNS server: not real resolvers.
			if !ok || siteLocal.Contains(ip) {
				continue
			}
			ap := netip.AddrPortFrom(ip.Unmap(), 53)
			if !slices.Contains(servers, ap) {
				servers = append(servers, ap)
			}
		}
		if s := windows.UTF16PtrToString(a.DnsSuffix); s != "" && !slices.Contains(search, s) {
			search = append(search, s)
		}
	}
	return servers, search, nil
}

func (c *nrpt) SupportsSplitDNS() bool { return true }

func (c *nrpt) Set(cfg DNSConfig) error {
	if len(cfg.Nameservers) == 0 {
		return fmt.Errorf("%w: no nameserver", ErrDNSConfig)
	}
	var names []string
	for _, d := range cfg.MatchDomains {
		d = strings.TrimSuffix(strings.ToLower(d), ".")
		if d == "" {
			continue
		}
		// "d" is the name itself, ".d" every name below it.
		names = append(names, d, "."+d)
	}
	if len(cfg.MatchDomains) == 0 {
		names = []string{"."} // full takeover
	}
	var servers []string
	for _, ns := range cfg.Nameservers {
		servers = append(servers, ns.String())
	}
	var keys []string
	for i := 0; i*nrptNamesPerRule < len(names); i++ {
		keys = append(keys, fmt.Sprintf("%s%s-%d", nrptPrefix, c.tunName, i))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	all := append(slices.Clone(c.keys), keys...)
	slices.Sort(all)
	if err := writeState(c.stateDir, &dnsState{Mode: modeNRPT, Keys: slices.Compact(all)}); err != nil {
		return err
	}
	for i, k := range keys {
		chunk := names[i*nrptNamesPerRule : min(len(names), (i+1)*nrptNamesPerRule)]
		if err := writeNRPTRule(k, chunk, strings.Join(servers, ";")); err != nil {
			return err
		}
	}
	for _, k := range c.keys {
		if !slices.Contains(keys, k) {
			deleteNRPTRule(k)
		}
	}
	c.keys = keys
	if err := writeState(c.stateDir, &dnsState{Mode: modeNRPT, Keys: keys}); err != nil {
		return err
	}
	flushDNSCache()
	return nil
}

func writeNRPTRule(name string, names []string, servers string) error {
	k, _, err := registry.CreateKey(registry.LOCAL_MACHINE, nrptBase+`\`+name, registry.SET_VALUE)
	if err != nil {
		return fmt.Errorf("%w: create NRPT rule %s: %w", ErrDNSConfig, name, err)
	}
	defer k.Close()
	for _, set := range []func() error{
		func() error { return k.SetDWordValue("Version", 2) },
		func() error { return k.SetStringsValue("Name", names) },
		func() error { return k.SetStringValue("GenericDNSServers", servers) },
		func() error { return k.SetDWordValue("ConfigOptions", 8) }, // use GenericDNSServers
		func() error { return k.SetStringValue("IPSECCARestriction", "") },
		func() error { return k.SetStringValue("Comment", nrptComment) },
	} {
		if err := set(); err != nil {
			return fmt.Errorf("%w: write NRPT rule %s: %w", ErrDNSConfig, name, err)
		}
	}
	return nil
}

// deleteNRPTRule removes a rule if it is Postern's (name and comment).
func deleteNRPTRule(name string) error {
	if !strings.HasPrefix(name, nrptPrefix) {
		return nil
	}
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, nrptBase+`\`+name, registry.QUERY_VALUE)
	if errors.Is(err, registry.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open NRPT rule %s: %w", name, err)
	}
	comment, _, _ := k.GetStringValue("Comment")
	k.Close()
	if comment != nrptComment {
		return nil
	}
	if err := registry.DeleteKey(registry.LOCAL_MACHINE, nrptBase+`\`+name); err != nil && !errors.Is(err, registry.ErrNotExist) {
		return fmt.Errorf("delete NRPT rule %s: %w", name, err)
	}
	return nil
}

var siteLocal = netip.MustParsePrefix("fec0::/10")

var procDnsFlushResolverCache = windows.NewLazySystemDLL("dnsapi.dll").NewProc("DnsFlushResolverCache")

// flushDNSCache makes the DNS Client forget answers cached before the rules
// changed.
func flushDNSCache() {
	if procDnsFlushResolverCache.Find() == nil {
		procDnsFlushResolverCache.Call()
	}
}

func (c *nrpt) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, k := range c.keys {
		if err := deleteNRPTRule(k); err != nil {
			errs = append(errs, err)
		}
	}
	c.keys = nil
	flushDNSCache()
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrDNSConfig, errors.Join(errs...))
	}
	return removeState(c.stateDir)
}

func restoreOS(st *dnsState) error {
	if st.Mode != modeNRPT {
		return fmt.Errorf("%w: unknown mode %q on windows", ErrDNSState, st.Mode)
	}
	var errs []error
	for _, k := range st.Keys {
		if err := deleteNRPTRule(k); err != nil {
			errs = append(errs, err)
		}
	}
	flushDNSCache()
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrDNSConfig, errors.Join(errs...))
	}
	return nil
}
