package dnsproxy

import (
	"context"
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"postern.dev/postern/localapi"
	"postern.dev/postern/policy"
)

// Explain says how name resolves right now (postern dns NAME): the resource
// it matches, its synthetic addresses and the connectors serving it; or,
// for any other name, the upstream that answers and its answer.
func (p *Proxy) Explain(ctx context.Context, name string) localapi.DNSExplain {
	canon := policy.CanonicalName(strings.TrimSpace(name))
	ex := localapi.DNSExplain{Name: canon}
	if canon == "" {
		ex.Note = "empty name"
		return ex
	}
	if _, err := dns.IsDomainName(canon); !err {
		ex.Note = fmt.Sprintf("%q is not a valid DNS name", name)
		return ex
	}
	t := p.table.Load()
	full, rl := canon, t.match(canon)
	if rl == nil && !strings.Contains(canon, ".") {
		for _, sd := range p.cfg.SearchDomains {
			if r := t.match(canon + "." + sd); r != nil {
				full, rl = canon+"."+sd, r
				break
			}
		}
	}
	if rl != nil {
		return p.explainResource(ex, canon, full, rl)
	}
	return p.explainForward(ctx, ex)
}

func (p *Proxy) explainResource(ex localapi.DNSExplain, canon, full string, rl *rule) localapi.DNSExplain {
	ex.Resource = rl.res.Name
	ex.Pattern = rl.pattern
	var notes []string
	if full != canon {
		notes = append(notes, fmt.Sprintf("short name expanded with search domain to %s", full))
	}
	if rl.fixed.IsValid() {
		ex.Synthetic = []string{rl.fixed.String()}
		notes = append(notes, fmt.Sprintf("alias of address resource %s: answered with the address itself", rl.res.Address))
	} else {
		a4, a6, err := p.allocate(full)
		if err != nil {
			notes = append(notes, "no synthetic address: "+err.Error())
		} else {
			ex.Synthetic = append(ex.Synthetic, a4.String())
			if p.cfg.IPv6 {
				ex.Synthetic = append(ex.Synthetic, a6.String())
			} else {
				notes = append(notes, "IPv6 is off: AAAA queries get no address")
			}
		}
		if rl.alias {
			notes = append(notes, fmt.Sprintf("alias: the connector resolves %s", rl.target))
		} else {
			notes = append(notes, "the connector resolves the name inside network "+rl.res.Network)
		}
	}
	online := 0
	if m := p.connectors.Load(); m != nil {
		for _, c := range (*m)[rl.res.Network] {
			s := c.Name
			if !c.Online {
				s += " (offline)"
			} else {
				online++
			}
			ex.Connectors = append(ex.Connectors, s)
		}
	}
	if online == 0 {
		notes = append(notes, fmt.Sprintf("no connector of network %s is online", rl.res.Network))
	}
	ex.Note = strings.Join(notes, "; ")
	return ex
}

func (p *Proxy) explainForward(ctx context.Context, ex localapi.DNSExplain) localapi.DNSExplain {
	fqdn := dns.Fqdn(ex.Name)
	if ip, ok := parseReverse(ex.Name); ok && p.inRanges(ip) {
		if m, ok := p.Resolve(ip); ok {
			ex.Resource, ex.Pattern = m.Resource, m.Pattern
			ex.Answer = []string{dns.Fqdn(m.Queried)}
			ex.Note = "synthetic address: answered by the Postern DNS proxy"
		} else {
			ex.Note = "inside the synthetic range but not allocated: NXDOMAIN"
		}
		return ex
	}
	ex.Note = "not a resource you may use: forwarded to the system's resolvers"
	var ups []string
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		q := new(dns.Msg)
		q.SetQuestion(fqdn, qt)
		q.SetEdns0(ednsSize, false)
		resp, up, err := p.fwd.exchange(ctx, q)
		if err != nil {
			ex.Note += "; " + dns.TypeToString[qt] + ": " + err.Error()
			continue
		}
		if !strings.Contains(strings.Join(ups, ","), up.String()) {
			ups = append(ups, up.String())
		}
		if resp.Rcode != dns.RcodeSuccess {
			ex.Answer = append(ex.Answer, fmt.Sprintf("%s: %s", dns.TypeToString[qt], dns.RcodeToString[resp.Rcode]))
		}
		for _, rr := range resp.Answer {
			ex.Answer = append(ex.Answer, rr.String())
		}
	}
	ex.Upstream = strings.Join(ups, ",")
	return ex
}
