package traversal

import (
	"context"
	"net"
	"sort"
	"sync"
	"time"

	"postern.dev/postern/traversal/sigwire"
)

// diagnoseTimeout bounds each relay probe of Diagnose.
const diagnoseTimeout = 2 * time.Second

// RelayCheck is what Diagnose saw of one relay.
type RelayCheck struct {
	ID      string        `json:"id"`
	Name    string        `json:"name"`
	UDPAddr string        `json:"udp_addr"`
	TLSAddr string        `json:"tls_addr"`
	UDP     bool          `json:"udp"`               // a STUN binding on UDP was answered
	UDPRTT  time.Duration `json:"udp_rtt,omitempty"` // its round trip
	UDPErr  string        `json:"udp_error,omitempty"`
	// Reflexive is our plain socket's address as this relay saw it.
	Reflexive string        `json:"reflexive,omitempty"`
	TLS       bool          `json:"tls"`               // a TLS handshake completed
	TLSRTT    time.Duration `json:"tls_rtt,omitempty"` // connect plus handshake
	TLSErr    string        `json:"tls_error,omitempty"`
}

// NAT mapping behaviours reported by Diagnose.
const (
	MappingIndependent = "endpoint-independent" // same public address towards every destination
	MappingDependent   = "endpoint-dependent"   // a new public address per destination: direct paths need the peer's help
	MappingUnknown     = "unknown"
)

// NATReport is the NAT behaviour seen from the plain socket.
type NATReport struct {
	Mapping string `json:"mapping"`
	// Observations are "destination -> our address as seen there", from
	// the relays' STUN answers and the connectors' check answers.
	Observations []string `json:"observations,omitempty"`
	Note         string   `json:"note,omitempty"`
}

// ConnectorReport is one connector's state: the path of its live
// connection, or the error of the last dial that failed, with the candidate
// pairs checked.
type ConnectorReport struct {
	Connector string     `json:"connector"`
	Connected bool       `json:"connected"`
	Path      PathInfo   `json:"path,omitzero"`
	Relay     string     `json:"relay,omitempty"` // the relay whose signaling found the pairs
	Pairs     []PairInfo `json:"pairs,omitempty"`
	Error     string     `json:"error,omitempty"`
	At        time.Time  `json:"at,omitzero"` // when the failure happened
}

// Diagnosis is Diagnose's report (postern netcheck).
type Diagnosis struct {
	LocalAddr  string            `json:"local_addr"`
	Relays     []RelayCheck      `json:"relays"`
	NAT        NATReport         `json:"nat"`
	Connectors []ConnectorReport `json:"connectors"`
}

// Diagnose probes every listed relay over UDP (STUN from the plain socket)
// and TLS, derives the NAT's mapping behaviour from the addresses the relays
// and the connectors saw, and reports each connector's pairs.
func (d *Dialer) Diagnose(ctx context.Context) Diagnosis {
	out := Diagnosis{LocalAddr: d.udp.LocalAddr().String()}
	relays := d.cfg.Relays()
	out.Relays = make([]RelayCheck, len(relays))
	var wg sync.WaitGroup
	for i, r := range relays {
		out.Relays[i] = RelayCheck{ID: r.ID, Name: r.Name, UDPAddr: r.UDPAddr, TLSAddr: r.TLSAddr}
		rc := &out.Relays[i]
		// Probed where the connections go: through NAT64 on an IPv6-only
		// network (nat64.go); reported at the addresses the controller gave.
		r.UDPAddr = defaultNAT64.translate(ctx, r.UDPAddr, true)
		if r.TLSAddr != "" {
			r.TLSAddr = defaultNAT64.translate(ctx, r.TLSAddr, true)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			server, err := net.ResolveUDPAddr("udp", r.UDPAddr)
			if err != nil {
				rc.UDPErr = err.Error()
				return
			}
			resp, rtt, err := d.m.probe(ctx, server, diagnoseTimeout)
			if err != nil {
				rc.UDPErr = err.Error()
				return
			}
			rc.UDP, rc.UDPRTT = true, rtt
			if a, err := mappedAddr(resp.msg); err == nil {
				rc.Reflexive = a.String()
			}
		}()
		go func() {
			defer wg.Done()
			if r.TLSAddr == "" || r.TLSCertSHA256 == "" {
				rc.TLSErr = "relay has no pinned TLS address"
				return
			}
			tctx, cancel := context.WithTimeout(ctx, diagnoseTimeout)
			defer cancel()
			start := time.Now()
			c, err := dialRelayTLS(tctx, r, sigwire.ALPNTURN, nil)
			if err != nil {
				rc.TLSErr = err.Error()
				return
			}
			rc.TLS, rc.TLSRTT = true, time.Since(start)
			c.Close()
		}()
	}
	wg.Wait()
	out.Connectors = d.connectorReports()
	out.NAT = natReport(out.Relays, out.Connectors)
	return out
}

// natReport compares the public addresses our plain socket had towards
// different destinations.
func natReport(relays []RelayCheck, conns []ConnectorReport) NATReport {
	seen := map[string]string{} // destination -> mapped
	for _, r := range relays {
		if r.Reflexive != "" {
			seen["relay "+r.Name+" "+r.UDPAddr] = r.Reflexive
		}
	}
	for _, c := range conns {
		for _, p := range c.Pairs {
			if p.Local == "udp" && p.Mapped != "" {
				seen["connector "+c.Connector+" "+p.Remote] = p.Mapped
			}
		}
	}
	rep := NATReport{Mapping: MappingUnknown}
	mapped := map[string]bool{}
	for dst, m := range seen {
		rep.Observations = append(rep.Observations, dst+" -> "+m)
		mapped[m] = true
	}
	sort.Strings(rep.Observations)
	switch {
	case len(seen) == 0:
		rep.Note = "no relay answered over UDP: UDP may be blocked"
	case len(seen) == 1:
		rep.Note = "one destination answered; two relays or a connected connector tell whether the mapping depends on the destination"
	case len(mapped) == 1:
		rep.Mapping = MappingIndependent
	default:
		rep.Mapping = MappingDependent
		rep.Note = "the NAT maps each destination to another port: direct paths need a peer whose NAT filters by address only, else the relay carries the traffic"
	}
	return rep
}

// failure is the last failed dial to a connector.
type failure struct {
	relay string
	pairs []PairInfo
	err   string
	at    time.Time
}

func (d *Dialer) noteFailure(connector, relay string, pairs []PairInfo, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failures == nil {
		d.failures = map[string]failure{}
	}
	d.failures[connector] = failure{relay: relay, pairs: pairs, err: err.Error(), at: time.Now()}
}

func (d *Dialer) clearFailure(connector string) {
	d.mu.Lock()
	delete(d.failures, connector)
	d.mu.Unlock()
}

// connectorReports lists live connections (with their current leg's pairs)
// and connectors whose last dial failed, by connector id.
func (d *Dialer) connectorReports() []ConnectorReport {
	d.mu.Lock()
	type live struct {
		conn *dialState
		rtt  time.Duration
	}
	var lives []live
	for c, st := range d.conns {
		lives = append(lives, live{st, c.ConnectionStats().SmoothedRTT})
	}
	fails := make(map[string]failure, len(d.failures))
	for k, v := range d.failures {
		fails[k] = v
	}
	d.mu.Unlock()
	var out []ConnectorReport
	connected := map[string]bool{}
	for _, x := range lives {
		p := x.conn.getPath()
		p.RTT = x.rtt
		r := ConnectorReport{Connector: x.conn.connector, Connected: true, Path: p}
		if l := x.conn.current(); l != nil {
			r.Relay = l.relay.Name
			r.Pairs = l.s.pairs()
		}
		connected[r.Connector] = true
		out = append(out, r)
	}
	for id, f := range fails {
		if connected[id] {
			continue
		}
		out = append(out, ConnectorReport{Connector: id, Relay: f.relay, Pairs: f.pairs, Error: f.err, At: f.at})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Connector < out[b].Connector })
	return out
}
