package dnsproxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"postern.dev/postern/policy"
)

// syntheticHandler answers names of the resources the user may use with
// synthetic addresses, and PTR queries for the synthetic ranges. Everything
// else goes to Next.
type syntheticHandler struct {
	p    *Proxy
	Next Handler
}

func (h *syntheticHandler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	if q.Qclass != dns.ClassINET {
		h.Next.ServeDNS(ctx, w, r)
		return
	}
	name := policy.CanonicalName(q.Name)
	if q.Qtype == dns.TypePTR {
		if ip, ok := parseReverse(name); ok && h.p.inRanges(ip) {
			h.p.writeReply(w, r, h.p.answerPTR(r, ip))
			return
		}
		h.Next.ServeDNS(ctx, w, r)
		return
	}
	rl := h.p.table.Load().match(name)
	if rl == nil {
		h.Next.ServeDNS(ctx, w, r)
		return
	}
	h.p.writeReply(w, r, h.p.answerName(r, q.Name, name, rl, nil))
}

// searchHandler expands a single-label name with the search domains when
// the expansion is a resource name (db -> db.corp.internal), answering with
// a CNAME to the full name and its synthetic address. Other names go to
// Next unchanged (the stub resolver applies search domains itself for
// names the upstream does not know).
type searchHandler struct {
	p    *Proxy
	Next Handler
}

func (h *searchHandler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	name := policy.CanonicalName(q.Name)
	if len(h.p.cfg.SearchDomains) == 0 || q.Qclass != dns.ClassINET || name == "" || strings.IndexByte(name, '.') >= 0 {
		h.Next.ServeDNS(ctx, w, r)
		return
	}
	t := h.p.table.Load()
	for _, sd := range h.p.cfg.SearchDomains {
		full := name + "." + sd
		if rl := t.match(full); rl != nil {
			cname := &dns.CNAME{
				Hdr:    dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: h.p.cfg.TTL},
				Target: dns.Fqdn(full),
			}
			h.p.writeReply(w, r, h.p.answerName(r, dns.Fqdn(full), full, rl, cname))
			return
		}
	}
	h.Next.ServeDNS(ctx, w, r)
}

// answerName builds the answer for a name that matched rl. owner is the
// owner name to use in records (as the client spelled it, so 0x20 case
// randomisation survives), name its canonical form. A non-nil cname is put
// first (search-domain expansion).
func (p *Proxy) answerName(r *dns.Msg, owner, name string, rl *rule, cname *dns.CNAME) *dns.Msg {
	m := newReply(r, dns.RcodeSuccess)
	m.Authoritative = true
	if cname != nil {
		m.Answer = append(m.Answer, cname)
	}
	qt := r.Question[0].Qtype
	wantA := qt == dns.TypeA || qt == dns.TypeANY
	wantAAAA := qt == dns.TypeAAAA || qt == dns.TypeANY
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: p.cfg.TTL}
	}
	var v4, v6 netip.Addr
	switch {
	case rl.fixed.IsValid():
		if rl.fixed.Is4() {
			v4 = rl.fixed
		} else {
			v6 = rl.fixed
		}
	case wantA || (wantAAAA && p.cfg.IPv6):
		a4, a6, err := p.allocate(name)
		if err != nil {
			p.log.Warn("dns: no synthetic address", "name", name, "err", err)
			m := newReply(r, dns.RcodeServerFailure)
			return m
		}
		v4 = a4
		if p.cfg.IPv6 {
			v6 = a6
		}
	}
	if wantA && v4.IsValid() {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: v4.AsSlice()})
	}
	if wantAAAA && v6.IsValid() {
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: v6.AsSlice()})
	}
	if len(m.Answer) == 0 || (cname != nil && len(m.Answer) == 1) {
		// NODATA: the name exists, not with this type. The SOA lets the
		// client cache that briefly (RFC 2308).
		m.Ns = append(m.Ns, p.soa(rl))
	}
	return m
}

// answerPTR answers a reverse query for an address inside the synthetic
// ranges: the name it stands for, or NXDOMAIN (never forwarded: these
// addresses mean nothing to the upstream resolvers).
func (p *Proxy) answerPTR(r *dns.Msg, ip netip.Addr) *dns.Msg {
	name, _, ok := p.Lookup(ip)
	if !ok {
		m := newReply(r, dns.RcodeNameError)
		m.Authoritative = true
		m.Ns = append(m.Ns, p.soa(nil))
		return m
	}
	m := newReply(r, dns.RcodeSuccess)
	m.Authoritative = true
	m.Answer = append(m.Answer, &dns.PTR{
		Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: p.cfg.TTL},
		Ptr: dns.Fqdn(name),
	})
	return m
}

// soa is the SOA record of negative answers: owned by the matched pattern's
// zone, or the root of the reverse zones.
func (p *Proxy) soa(rl *rule) *dns.SOA {
	zone := "postern.invalid."
	if rl != nil {
		zone = dns.Fqdn(strings.TrimPrefix(rl.pattern, "*."))
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: p.cfg.TTL},
		Ns:      "dns.postern.invalid.",
		Mbox:    "hostmaster.postern.invalid.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  p.cfg.TTL,
	}
}

// writeReply sends m, capped to what the transport and the client allow.
func (p *Proxy) writeReply(w dns.ResponseWriter, r, m *dns.Msg) {
	m.Truncate(replySize(w, r, p.cfg.MaxResponseSize))
	if err := w.WriteMsg(m); err != nil && !errors.Is(err, context.Canceled) {
		p.log.Debug("dns: write reply", "to", w.RemoteAddr(), "err", err)
	}
}
