package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNS64Config configures the lab's DNS64 resolver (`postern-lab dns64`,
// RFC 6147): it forwards every query to Upstream and, when a name has A
// records but no AAAA record, answers its AAAA query with the A addresses
// embedded in Prefix (a /96, RFC 6052). ipv4only.arpa, whose A records are
// well known (RFC 7050), is answered locally, so clients discover Prefix
// as they would on a real NAT64 network.
type DNS64Config struct {
	Listen   string            // "ip:port", UDP and TCP; port 0: one free for both
	OnListen func(addr string) // as DNSConfig.OnListen
	Prefix   netip.Prefix      // the NAT64 prefix, a /96
	Upstream string            // "ip:port" of the resolver that knows the names
	Logger   *slog.Logger
}

// ipv4OnlyArpa is RFC 7050's name with the A records 192.0.0.170 and
// 192.0.0.171.
const ipv4OnlyArpa = "ipv4only.arpa."

var ipv4OnlyA = []netip.Addr{netip.MustParseAddr("192.0.0.170"), netip.MustParseAddr("192.0.0.171")}

type dns64Handler struct {
	prefix   netip.Prefix
	upstream string
	log      *slog.Logger
}

// exchange asks the upstream, over the protocol the client used.
func (h *dns64Handler) exchange(w dns.ResponseWriter, q dns.Question, id *dns.Msg) (*dns.Msg, error) {
	if strings.EqualFold(q.Name, ipv4OnlyArpa) {
		m := new(dns.Msg)
		m.SetReply(id)
		m.Authoritative = true
		if q.Qtype == dns.TypeA {
			for _, a := range ipv4OnlyA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IP(a.AsSlice())})
			}
		}
		return m, nil
	}
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	req := new(dns.Msg)
	req.Id = id.Id
	req.RecursionDesired = id.RecursionDesired
	req.Question = []dns.Question{q}
	resp, _, err := (&dns.Client{Net: proto, Timeout: 3 * time.Second}).Exchange(req, h.upstream)
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", h.upstream, err)
	}
	return resp, nil
}

func (h *dns64Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	fail := func(rcode int) {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		_ = w.WriteMsg(m)
	}
	if len(req.Question) != 1 {
		fail(dns.RcodeFormatError)
		return
	}
	q := req.Question[0]
	resp, err := h.exchange(w, q, req)
	if err != nil {
		h.log.Debug("upstream failed", "name", q.Name, "err", err)
		fail(dns.RcodeServerFailure)
		return
	}
	if q.Qtype != dns.TypeAAAA || resp.Rcode != dns.RcodeSuccess || hasType(resp.Answer, dns.TypeAAAA) {
		resp.Id = req.Id
		_ = w.WriteMsg(resp)
		return
	}
	// No AAAA: synthesize from the A records (RFC 6147 section 5.1.6).
	aq := q
	aq.Qtype = dns.TypeA
	aresp, err := h.exchange(w, aq, req)
	if err != nil || aresp.Rcode != dns.RcodeSuccess {
		resp.Id = req.Id
		_ = w.WriteMsg(resp) // the empty AAAA answer stands
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	for _, rr := range aresp.Answer {
		switch a := rr.(type) {
		case *dns.A:
			v4, ok := netip.AddrFromSlice(a.A.To4())
			if !ok {
				continue
			}
			hdr := a.Hdr
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(Synthesize64(h.prefix, v4).AsSlice())})
		case *dns.CNAME:
			m.Answer = append(m.Answer, a)
		}
	}
	h.log.Debug("synthesized", "name", q.Name, "answers", len(m.Answer))
	_ = w.WriteMsg(m)
}

func hasType(rrs []dns.RR, t uint16) bool {
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			return true
		}
	}
	return false
}

// Synthesize64 embeds an IPv4 address in a /96 NAT64 prefix (RFC 6052).
func Synthesize64(p netip.Prefix, v4 netip.Addr) netip.Addr {
	b := p.Masked().Addr().As16()
	a := v4.As4()
	copy(b[12:], a[:])
	return netip.AddrFrom16(b)
}

// ServeDNS64 runs the DNS64 resolver until ctx ends.
func ServeDNS64(ctx context.Context, cfg DNS64Config) error {
	switch {
	case cfg.Listen == "":
		return errors.New("dns64: --listen is required")
	case !cfg.Prefix.IsValid() || !cfg.Prefix.Addr().Is6() || cfg.Prefix.Bits() != 96:
		return fmt.Errorf("dns64: --prefix %v: want an IPv6 /96", cfg.Prefix)
	}
	if _, err := netip.ParseAddrPort(cfg.Upstream); err != nil {
		return fmt.Errorf("dns64: --upstream %q: want ip:port: %w", cfg.Upstream, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Info("dns64 listening", "addr", cfg.Listen, "prefix", cfg.Prefix, "upstream", cfg.Upstream)
	return serveDNS(ctx, cfg.Listen, cfg.OnListen, &dns64Handler{prefix: cfg.Prefix.Masked(), upstream: cfg.Upstream, log: log})
}
