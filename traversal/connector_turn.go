package traversal

import (
	"context"
	"net"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/traversal/sigwire"
)

// udpDeadAfter is how many STUN rounds (three requests each) to a relay
// must fail before a connector that can allocate on it does so over TLS.
const udpDeadAfter = 1

// relayAllocation is a connector's own TURN allocation over TLS on one
// relay, for a connector whose network blocks UDP: its QUIC server also
// runs on the allocation (ConnectorAgentConfig.Serve), and its sessions
// answer checks that arrive through it.
type relayAllocation struct {
	link *relayLink
	al   *allocation
}

// canAllocate reports whether the agent may reach relays over TLS.
func (a *ConnectorAgent) canAllocate() bool {
	return a.cfg.TURNCredentials != nil && a.cfg.Serve != nil
}

// allocateOverTLS makes the TURN allocation over TLS on link l's relay,
// serves QUIC on it, attaches every running session and tells their
// clients the new relayed candidate. It lives until ctx ends.
func (a *ConnectorAgent) allocateOverTLS(ctx context.Context, l *relayLink) {
	creds, err := a.cfg.TURNCredentials(ctx)
	if err != nil {
		a.log.Warn("TURN credentials for a relay over TLS", "relay", l.info.Name, "err", err)
		return
	}
	al, err := allocate(ctx, l.info, TransportTLS, creds)
	if err != nil {
		a.log.Warn("no TURN allocation over TLS", "relay", l.info.Name, "err", err)
		return
	}
	al.tr = &quic.Transport{Conn: al.conn}
	al.m = newMux(al.tr, "relay-"+TransportTLS, a.log)
	ra := &relayAllocation{link: l, al: al}
	a.mu.Lock()
	if ctx.Err() != nil {
		a.mu.Unlock()
		al.close()
		return
	}
	a.allocs = append(a.allocs, ra)
	type sess struct {
		id string
		cs *connSession
	}
	var running []sess
	for id, cs := range a.sessions {
		running = append(running, sess{id, cs})
	}
	a.mu.Unlock()
	a.cfg.Serve(al.tr)
	go func() { _ = al.m.run(ctx) }()
	addr := al.relayedAddr()
	a.log.Info("reachable through a relay over TLS (UDP blocked)", "relay", l.info.Name, "relayed", addr)
	for _, x := range running {
		x.cs.s.attach(al.m)
		if err := al.permit(x.cs.remoteAddrs()); err != nil {
			a.log.Debug("TURN permission", "err", err)
		}
		a.sendCandidate(x.cs.link, x.id, sigwire.Candidate{Type: sigwire.CandRelay, Addr: addr})
	}
	<-ctx.Done()
	a.mu.Lock()
	for i, x := range a.allocs {
		if x == ra {
			a.allocs = append(a.allocs[:i], a.allocs[i+1:]...)
			break
		}
	}
	a.mu.Unlock()
	al.close()
}

// RelayedAddrs returns the relayed addresses of the agent's own
// allocations (a connector whose network blocks UDP).
func (a *ConnectorAgent) RelayedAddrs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, ra := range a.allocs {
		out = append(out, ra.al.relayedAddr())
	}
	return out
}

// sendCandidate trickles one candidate to the client of a session.
func (a *ConnectorAgent) sendCandidate(l *relayLink, session string, c sigwire.Candidate) {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn == nil {
		return
	}
	if err := conn.Write(&sigwire.Message{Type: sigwire.TypeCandidate, Session: session, Candidates: []sigwire.Candidate{c}}); err != nil {
		a.log.Debug("trickle candidate", "session", session, "err", err)
	}
}

// joinAllocationsLocked attaches a new session to the agent's allocations
// and returns their relayed candidates for the answer and the allocations,
// on which the caller permits the client's addresses once a.mu is released.
func (a *ConnectorAgent) joinAllocationsLocked(cs *connSession) ([]sigwire.Candidate, []*allocation) {
	var out []sigwire.Candidate
	var als []*allocation
	for _, ra := range a.allocs {
		cs.s.attach(ra.al.m)
		als = append(als, ra.al)
		out = append(out, sigwire.Candidate{Type: sigwire.CandRelay, Addr: ra.al.relayedAddr()})
	}
	return out, als
}

// permitOnAllocations lets new client addresses through every allocation.
func (a *ConnectorAgent) permitOnAllocations(addrs []*net.UDPAddr) {
	a.mu.Lock()
	var als []*allocation
	for _, ra := range a.allocs {
		als = append(als, ra.al)
	}
	a.mu.Unlock()
	for _, al := range als {
		if err := al.permit(addrs); err != nil {
			a.log.Debug("TURN permission", "err", err)
		}
	}
}

// remoteAddrs returns the client's candidate addresses to permit on the
// connector's allocations: every one but host candidates (private addresses
// are no use through a relay, and relays may refuse the whole permission
// request for one of them).
func (cs *connSession) remoteAddrs() []*net.UDPAddr {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]*net.UDPAddr(nil), cs.remotes...)
}

func (cs *connSession) addRemotes(xs []typedAddr) []*net.UDPAddr {
	var addrs []*net.UDPAddr
	for _, x := range xs {
		if x.kind != sigwire.CandHost {
			addrs = append(addrs, x.addr)
		}
	}
	cs.mu.Lock()
	cs.remotes = append(cs.remotes, addrs...)
	cs.mu.Unlock()
	return addrs
}

// stunFailed starts the allocation over TLS once UDP to a relay looks
// blocked (udpDeadAfter failed STUN rounds in a row); after an allocation
// that failed or ended, the next failed round tries again.
func (a *ConnectorAgent) stunFailed(ctx context.Context, l *relayLink, failures int) {
	if failures < udpDeadAfter || !a.canAllocate() {
		return
	}
	l.mu.Lock()
	busy := l.turnBusy
	l.turnBusy = true
	l.mu.Unlock()
	if busy {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.allocateOverTLS(ctx, l)
		l.mu.Lock()
		l.turnBusy = false
		l.mu.Unlock()
	}()
}
