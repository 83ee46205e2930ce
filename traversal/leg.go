package traversal

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/sigwire"
)

// leg is one signaling session through one relay for one connection: the
// check session, its signaling connection and the client's TURN allocation
// on that relay. A connection has a new leg after its relay is lost.
type leg struct {
	d      *Dialer
	ci     controlapi.ConnectorInfo
	relay  controlapi.RelayInfo
	sig    *sigwire.Conn
	s      *session
	sigErr chan error
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	alloc   *allocation
	remotes []*net.UDPAddr
	// peerRelayed are the connector's own relayed addresses (a connector
	// whose network blocks UDP allocates on a relay over TLS): pairs to
	// them are relayed paths even from the plain socket.
	peerRelayed map[string]bool
	closed      bool
	srflx       string
	udpQuiet    bool // the relay did not answer our STUN before the offer
	carried     bool // a QUIC path has used the allocation's transport
	released    bool // the unused allocation was freed
}

// openLeg connects to relay r's signaling service, sends the offer and starts
// candidate gathering (server-reflexive, TURN) and checks.
func (d *Dialer) openLeg(ctx context.Context, c controlapi.ConnectorInfo, r controlapi.RelayInfo, cert *tls.Certificate, token string) (*leg, error) {
	// The server-reflexive address is learned while signaling connects, so
	// that the offer carries it: the connector then primes its NAT towards
	// it before answering, and our checks, which start on the answer, find
	// that NAT open for them.
	var srflx chan string
	if !d.cfg.NoDirect {
		srflx = make(chan string, 1)
		go func() { srflx <- d.quickReflexive(ctx, r) }()
	}
	sig, _, err := dialSignal(ctx, r, cert, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: c.ID, Token: token})
	if err != nil {
		return nil, err
	}
	l := &leg{d: d, ci: c, relay: r, sig: sig, s: newSession(d.log.With("connector", c.ID)), sigErr: make(chan error, 1)}
	offer := l.hostCands()
	if srflx != nil {
		if a := <-srflx; a != "" {
			l.srflx = a
			offer = append([]sigwire.Candidate{{Type: sigwire.CandSrflx, Addr: a}}, offer...)
		} else {
			l.udpQuiet = true
		}
	}
	// The leg outlives the dial: it serves path upgrades for the connection.
	l.ctx, l.cancel = context.WithCancel(d.ctx)
	l.s.attach(d.m)
	l.wg.Add(3)
	go func() { defer l.wg.Done(); l.s.run(l.ctx) }()
	go func() { defer l.wg.Done(); l.readSignal() }()
	go func() { defer l.wg.Done(); l.keepalive() }()
	if err := sig.Write(&sigwire.Message{Type: sigwire.TypeOffer, Ufrag: l.s.lufrag, Pwd: l.s.lpwd, Candidates: offer}); err != nil {
		l.close()
		return nil, fmt.Errorf("%w: offer: %w", ErrSignaling, err)
	}
	if !d.cfg.NoDirect {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.gatherReflexive() }()
	}
	if !d.cfg.NoRelay {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.allocate() }()
	}
	return l, nil
}

// stop ends signaling and checks but keeps the allocation, whose transport
// may still carry a path of the connection.
func (l *leg) stop() {
	l.cancel()
	l.sig.Close()
	l.wg.Wait()
	l.s.detach()
}

// close stops the leg and releases its allocation.
func (l *leg) close() {
	l.stop()
	l.mu.Lock()
	al := l.alloc
	l.alloc, l.closed = nil, true
	l.mu.Unlock()
	if al != nil {
		al.close()
	}
}

// markCarried records that a QUIC path uses the allocation (it must then
// live as long as the connection).
func (l *leg) markCarried() {
	l.mu.Lock()
	l.carried = true
	l.mu.Unlock()
}

// releaseIdleAllocation frees the TURN allocation (and its quota slot) of a
// leg whose connection never used it; a later repair allocates again.
func (l *leg) releaseIdleAllocation() {
	l.mu.Lock()
	al := l.alloc
	if al == nil || l.carried {
		l.mu.Unlock()
		return
	}
	l.alloc, l.released = nil, true
	l.mu.Unlock()
	l.s.detachFrom(al.m)
	al.close()
	l.d.log.Debug("released unused TURN allocation", "relay", l.relay.Name)
}

// isPeerRelayed reports whether addr is one of the connector's relayed
// addresses.
func (l *leg) isPeerRelayed(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peerRelayed[addr]
}

// relayedEvent reports whether a validated pair goes through a relay.
func (l *leg) relayedEvent(ev pathEvent) bool {
	return ev.m != l.d.m || l.isPeerRelayed(ev.addr.String())
}

// pathFor describes a validated pair and returns the transport to use on it.
func (l *leg) pathFor(ev pathEvent) (PathInfo, *quic.Transport) {
	if ev.m == l.d.m {
		if l.isPeerRelayed(ev.addr.String()) {
			return PathInfo{Path: PathRelay, Transport: TransportUDP, RemoteAddr: ev.addr.String(), Relay: l.relay.Name}, l.d.tr
		}
		return PathInfo{Path: PathDirect, Transport: TransportUDP, RemoteAddr: ev.addr.String()}, l.d.tr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.alloc == nil || l.alloc.m != ev.m {
		return PathInfo{}, nil
	}
	return PathInfo{Path: PathRelay, Transport: l.alloc.transport, RemoteAddr: ev.addr.String(), Relay: l.relay.Name}, l.alloc.tr
}

func (l *leg) hostCands() []sigwire.Candidate {
	if l.d.cfg.NoDirect {
		return nil
	}
	return hostCandidates(l.d.udp.LocalAddr(), append(append([]netip.Prefix(nil), DefaultExcludedPrefixes...), l.d.cfg.ExcludePrefixes...))
}

func (l *leg) fail(err error) {
	select {
	case l.sigErr <- err:
	default:
	}
}

func (l *leg) keepalive() {
	t := time.NewTicker(signalPing)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			_ = l.sig.Write(&sigwire.Message{Type: sigwire.TypeBye})
			l.sig.Close()
			return
		case <-t.C:
			_ = l.sig.Write(&sigwire.Message{Type: sigwire.TypePing})
		}
	}
}

// readSignal handles answers and candidates from the connector.
func (l *leg) readSignal() {
	for {
		// The relay answers the pings sent every signalPing: silence for
		// longer than signalDead means the relay or our network is gone.
		_ = l.sig.SetReadDeadline(time.Now().Add(signalDead))
		m, err := l.sig.Read()
		if err != nil {
			l.fail(fmt.Errorf("%w: %w", ErrSignaling, err))
			return
		}
		switch m.Type {
		case sigwire.TypeAnswer:
			l.s.setRemote(m.Ufrag, m.Pwd)
			l.addRemotes(m.Candidates)
		case sigwire.TypeCandidate:
			l.addRemotes(m.Candidates)
		case sigwire.TypeError:
			l.fail(fmt.Errorf("%w: %s", ErrSignaling, m.Error))
		}
	}
}

func (l *leg) addRemotes(cs []sigwire.Candidate) {
	typed := resolveCandidates(cs)
	var addrs []*net.UDPAddr
	for _, x := range typed {
		addrs = append(addrs, x.addr)
	}
	l.mu.Lock()
	l.remotes = append(l.remotes, addrs...)
	var relayed []*net.UDPAddr
	for _, x := range typed {
		if x.kind == sigwire.CandRelay {
			if l.peerRelayed == nil {
				l.peerRelayed = map[string]bool{}
			}
			l.peerRelayed[x.addr.String()] = true
			relayed = append(relayed, x.addr)
		}
	}
	al := l.alloc
	l.mu.Unlock()
	if !l.d.cfg.NoDirect {
		for _, x := range typed {
			// The plain socket reaches an IPv4 candidate from an
			// IPv6-only network through NAT64; allocations keep the
			// literal (the relay speaks IPv4 to it).
			l.s.addTarget(l.d.m, defaultNAT64.translateUDP(x.addr), x.kind)
		}
	}
	if al != nil {
		// Through our own allocation too (when our UDP is blocked as well,
		// the relay carries the packets between the two allocations).
		for _, x := range relayed {
			l.s.addTarget(al.m, x, sigwire.CandRelay)
		}
	}
	if al != nil {
		if err := al.permit(addrs); err != nil {
			l.d.log.Debug("TURN permission", "err", err)
		}
	}
}

func (l *leg) gatherReflexive() {
	l.refreshReflexive(l.ctx)
}

// reflexiveChanged asks the relay again and reports whether the mapping
// moved (NAT rebinding, a new network).
func (l *leg) reflexiveChanged(ctx context.Context) bool {
	l.mu.Lock()
	before := l.srflx
	l.mu.Unlock()
	l.refreshReflexive(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	return before != "" && l.srflx != before
}

// lateReflexiveHold holds our checks after a server-reflexive address that
// missed the offer was sent (about one signaling round trip through the relay).
const lateReflexiveHold = 500 * time.Millisecond

// quickReflexiveWait bounds the server-reflexive probe before an offer (UDP
// may be blocked: the offer must not wait long for it).
const quickReflexiveWait = 400 * time.Millisecond

// quickReflexive returns the plain socket's server-reflexive address seen by
// relay r, or "" when none answered within quickReflexiveWait.
func (d *Dialer) quickReflexive(ctx context.Context, r controlapi.RelayInfo) string {
	server, err := net.ResolveUDPAddr("udp", r.UDPAddr)
	if err != nil {
		return ""
	}
	req, err := stunBinding()
	if err != nil {
		return ""
	}
	resp, err := d.m.transact(ctx, req, server, quickReflexiveWait)
	if err != nil {
		return ""
	}
	a, err := mappedAddr(resp.msg)
	if err != nil {
		return ""
	}
	return a.String()
}

// signalDead is how long a signaling connection may stay silent.
const signalDead = 2*signalPing + 5*time.Second

// refreshReflexive learns the plain socket's server-reflexive address from
// the relay and, when it is new (first time, NAT rebinding, a new network),
// sends it to the connector, which starts checking (and so punching) it.
func (l *leg) refreshReflexive(ctx context.Context) {
	server, err := net.ResolveUDPAddr("udp", l.relay.UDPAddr)
	if err != nil {
		return
	}
	mapped, err := l.d.m.reflexive(ctx, server)
	if err != nil {
		l.d.log.Debug("no server-reflexive address", "relay", l.relay.Name, "err", err)
		return
	}
	addr := mapped.String()
	l.mu.Lock()
	changed := l.srflx != addr
	old := l.srflx
	l.srflx = addr
	l.mu.Unlock()
	if !changed {
		return
	}
	if old != "" {
		l.d.log.Info("server-reflexive address changed", "relay", l.relay.Name, "old", old, "new", addr)
	} else {
		// Learned after the offer: the connector primes its NAT when this
		// candidate reaches it; until then our checks would reach its NAT
		// first (and make it map the connector's packets to a new port).
		l.d.log.Debug("server-reflexive address", "relay", l.relay.Name, "addr", addr)
		l.s.hold(lateReflexiveHold)
	}
	_ = l.sig.Write(&sigwire.Message{Type: sigwire.TypeCandidate, Candidates: []sigwire.Candidate{{Type: sigwire.CandSrflx, Addr: addr}}})
}

// allocate gets a TURN allocation, over UDP first and over TLS when UDP
// has not answered within TLSFallbackDelay; the first that succeeds is used.
func (l *leg) allocate() {
	ctx := l.ctx
	creds, err := l.d.cfg.TURNCredentials(ctx)
	if err != nil {
		l.d.log.Warn("TURN credentials", "err", err)
		if l.d.cfg.NoDirect {
			l.fail(fmt.Errorf("%w: TURN credentials: %w", ErrNoPath, err))
		}
		return
	}
	won := l.race(ctx, creds)
	if won == nil {
		l.d.log.Warn("no TURN allocation", "relay", l.relay.Name)
		if l.d.cfg.NoDirect {
			l.fail(fmt.Errorf("%w: no TURN allocation on relay %s", ErrNoPath, l.relay.Name))
		}
		return
	}
	won.tr = &quic.Transport{Conn: won.conn}
	won.m = newMux(won.tr, "relay-"+won.transport, l.d.log)
	l.mu.Lock()
	if l.closed || ctx.Err() != nil {
		l.mu.Unlock()
		won.close()
		return
	}
	l.alloc = won
	remotes := append([]*net.UDPAddr(nil), l.remotes...)
	var peerRelayed []*net.UDPAddr
	for a := range l.peerRelayed {
		if ua, err := net.ResolveUDPAddr("udp", a); err == nil {
			peerRelayed = append(peerRelayed, ua)
		}
	}
	l.mu.Unlock()
	l.s.attach(won.m)
	for _, x := range peerRelayed {
		l.s.addTarget(won.m, x, sigwire.CandRelay)
	}
	// The mux reads until the allocation's transport closes (with the
	// connection), not only while signaling lasts.
	go func() { _ = won.m.run(l.d.ctx) }()
	if err := won.permit(remotes); err != nil {
		l.d.log.Debug("TURN permission", "err", err)
	}
	l.d.log.Debug("TURN allocation", "relay", l.relay.Name, "over", won.transport, "relayed", won.relayedAddr())
	_ = l.sig.Write(&sigwire.Message{Type: sigwire.TypeCandidate, Candidates: []sigwire.Candidate{{Type: sigwire.CandRelay, Addr: won.relayedAddr()}}})
}

func (l *leg) race(ctx context.Context, creds controlapi.TURNCredentials) *allocation {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	type res struct {
		al  *allocation
		err error
	}
	ch := make(chan res, 2)
	go func() { al, err := allocate(actx, l.relay, "udp", creds); ch <- res{al, err} }()
	pending, tlsStarted := 1, false
	startTLS := func() {
		if !tlsStarted {
			tlsStarted = true
			pending++
			go func() { al, err := allocate(actx, l.relay, "tls", creds); ch <- res{al, err} }()
		}
	}
	timer := time.NewTimer(l.d.cfg.TLSFallbackDelay)
	defer timer.Stop()
	l.mu.Lock()
	quiet := l.udpQuiet
	l.mu.Unlock()
	if quiet {
		// UDP to this relay already went unanswered: UDP is probably
		// blocked, and TLS need not wait its turn.
		startTLS()
	}
	var won *allocation
	for pending > 0 {
		select {
		case <-timer.C:
			if won == nil {
				startTLS()
			}
		case r := <-ch:
			pending--
			switch {
			case r.err != nil:
				l.d.log.Debug("TURN allocation failed", "relay", l.relay.Name, "err", r.err)
				if won == nil {
					startTLS()
				}
			case won == nil:
				won = r.al
				cancel() // stop the other attempt
			default:
				r.al.close()
			}
		}
	}
	return won
}
