package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/dnsproxy"
)

// DNSConfig configures the lab's tiny authoritative DNS server
// (`postern-lab dns-server`): it answers A/AAAA for the records of its zones,
// NXDOMAIN for other names inside the zones and REFUSED for names outside
// them (it is no recursive resolver).
type DNSConfig struct {
	Listen string // "ip:port", UDP and TCP; port 0: one free for both
	// OnListen, when set, is called with the address served once both
	// sockets are bound (the chosen port when Listen's is 0).
	OnListen func(addr string)
	Zones    []string          // e.g. "corp.internal"
	Records  map[string]string // name -> IP or IPs separated by commas (an A and an AAAA); a name may be "*.zone" for a wildcard
	// Forward, if set ("ip:port"), answers names outside the zones by
	// asking that server (a corporate resolver that also resolves public
	// names); otherwise they are REFUSED.
	Forward string
	Logger  *slog.Logger
}

// ParseDNSRecord parses "name=ip[,ip...]" as given to --record.
func ParseDNSRecord(s string) (name string, ips []netip.Addr, err error) {
	n, a, ok := strings.Cut(s, "=")
	if !ok || n == "" {
		return "", nil, fmt.Errorf("dns record %q: want NAME=IP[,IP]", s)
	}
	for _, f := range strings.Split(a, ",") {
		ip, err := netip.ParseAddr(f)
		if err != nil {
			return "", nil, fmt.Errorf("dns record %q: %w", s, err)
		}
		ips = append(ips, ip)
	}
	return dns.Fqdn(strings.ToLower(n)), ips, nil
}

type dnsZoneHandler struct {
	zones   []string
	records map[string][]netip.Addr
	forward string
	log     *slog.Logger
}

func (h *dnsZoneHandler) inZone(name string) bool {
	for _, z := range h.zones {
		if dns.IsSubDomain(z, name) {
			return true
		}
	}
	return false
}

func (h *dnsZoneHandler) lookup(name string) ([]netip.Addr, bool) {
	if a, ok := h.records[name]; ok {
		return a, true
	}
	// Wildcards: *.zone matches one or more labels under zone.
	labels := dns.SplitDomainName(name)
	for i := 1; i < len(labels); i++ {
		if a, ok := h.records["*."+dns.Fqdn(strings.Join(labels[i:], "."))]; ok {
			return a, true
		}
	}
	return nil, false
}

func (h *dnsZoneHandler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if !h.inZone(name) && h.forward != "" {
		proto := "udp"
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			proto = "tcp"
		}
		c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
		resp, _, err := c.Exchange(req, h.forward)
		if err != nil {
			h.log.Debug("forward failed", "name", name, "err", err)
			m.Rcode = dns.RcodeServerFailure
			_ = w.WriteMsg(m)
			return
		}
		resp.Authoritative = false
		_ = w.WriteMsg(resp)
		return
	}
	if !h.inZone(name) {
		m.Rcode = dns.RcodeRefused
		h.log.Debug("refused", "name", name)
		_ = w.WriteMsg(m)
		return
	}
	m.Authoritative = true
	addrs, ok := h.lookup(name)
	if !ok {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	for _, addr := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 30}
		switch {
		case q.Qtype == dns.TypeA && addr.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(addr.AsSlice())})
		case q.Qtype == dns.TypeAAAA && addr.Is6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(addr.AsSlice())})
		}
	}
	h.log.Debug("answer", "name", name, "type", dns.TypeToString[q.Qtype], "answers", len(m.Answer))
	_ = w.WriteMsg(m)
}

// ServeDNS runs the DNS server until ctx ends.
func ServeDNS(ctx context.Context, cfg DNSConfig) error {
	if cfg.Listen == "" {
		return errors.New("dns server: --listen is required")
	}
	if len(cfg.Zones) == 0 {
		return errors.New("dns server: at least one --zone is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &dnsZoneHandler{records: map[string][]netip.Addr{}, forward: cfg.Forward, log: log}
	if cfg.Forward != "" {
		if _, err := netip.ParseAddrPort(cfg.Forward); err != nil {
			return fmt.Errorf("dns server: --forward %q: want ip:port: %w", cfg.Forward, err)
		}
	}
	for _, z := range cfg.Zones {
		if _, ok := dns.IsDomainName(z); !ok || z == "" {
			return fmt.Errorf("dns server: bad zone %q", z)
		}
		h.zones = append(h.zones, dns.Fqdn(strings.ToLower(z)))
	}
	for n, a := range cfg.Records {
		name, ips, err := ParseDNSRecord(n + "=" + a)
		if err != nil {
			return fmt.Errorf("dns server: %w", err)
		}
		if !h.inZone(strings.TrimPrefix(name, "*.")) {
			return fmt.Errorf("dns server: record %s is outside the zones %v", name, cfg.Zones)
		}
		h.records[name] = append(h.records[name], ips...)
	}
	log.Info("dns server listening", "addr", cfg.Listen, "zones", h.zones, "records", len(h.records))
	return serveDNS(ctx, cfg.Listen, cfg.OnListen, h)
}

// serveDNS answers with h on listen (UDP and TCP) until ctx ends; onListen
// (when set) learns the address once both sockets are bound.
func serveDNS(ctx context.Context, listen string, onListen func(string), h dns.Handler) error {
	pc, ln, err := listenDNS(listen)
	if err != nil {
		return err
	}
	if onListen != nil {
		onListen(pc.LocalAddr().String())
	}
	group := dnsproxy.StartServers(&dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h})
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-group.Stopped():
	}
	group.Stop(2 * time.Second)
	if runErr != nil {
		return fmt.Errorf("dns server: %w", runErr)
	}
	return nil
}

// listenDNS binds UDP and TCP on listen. With port 0 it takes a UDP port
// the kernel chose and the same TCP port, trying again when that one is
// taken for TCP (an ephemeral port of some outgoing connection).
func listenDNS(listen string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, nil, fmt.Errorf("dns server: listen %q: %w", listen, err)
	}
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", listen)
		if err != nil {
			return nil, nil, fmt.Errorf("dns server: listen udp %s: %w", listen, err)
		}
		addr := listen
		if port == "0" {
			addr = net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		}
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || try == 20 {
			return nil, nil, fmt.Errorf("dns server: listen tcp %s: %w", addr, err)
		}
	}
}
