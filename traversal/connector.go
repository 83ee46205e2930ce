package traversal

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/sigwire"
	"postern.dev/postern/traversal/udpgro"
)

// Connector-side timing.
const (
	stunRefresh = 25 * time.Second // keeps the NAT mapping towards each relay fresh
	stunRetry   = time.Second      // first retry after a failed STUN (doubling up to stunRefresh)
	// connectorHold is how long the connector holds its checks to a
	// client's punchable candidates after priming its NAT and answering,
	// unless the client's first check arrives sooner (see session.hold).
	connectorHold = time.Second
	signalPing    = 20 * time.Second
	// linkPing is how often a connector pings each relay over its signaling
	// link (ConnectorAgentConfig.SignalPing). A link whose NAT mapping went
	// away (conntrack flushed, the router restarted) looks open until the
	// connector writes, and meanwhile every client's offer through that
	// relay is lost: the next ping gets a reset, and a link that hears
	// nothing (not even the relay's pong) for linkDeadPings pings is
	// closed. Both lead to a new link.
	linkPing         = 5 * time.Second
	linkDeadPings    = 3
	maxBackoff       = 30 * time.Second
	sessionMaxLife   = 24 * time.Hour
	maxSessionsTotal = 4096
)

// ConnectorAgentConfig configures the connector side.
type ConnectorAgentConfig struct {
	// Transport is the connector's QUIC transport on its plain UDP socket
	// ((*connector.Connector).Transport()). The agent becomes the only reader
	// of its non-QUIC packets.
	Transport *quic.Transport
	// Certificate returns the connector's deployment-CA client certificate
	// (CN "connector:<id>") used to authenticate to relays.
	Certificate func() (*tls.Certificate, error)
	// AdvertiseAddr receives each server-reflexive address learned from the
	// relays ((*connector.Connector).AddAdvertisedAddr).
	AdvertiseAddr func(addr string)
	// WithdrawAddr, if set, receives a server-reflexive address that is no
	// longer current ((*connector.Connector).RemoveAdvertisedAddr).
	WithdrawAddr func(addr string)
	// VerifyOffer, if set, checks the Connection Token the relay forwards
	// with each offer (audience = this connector) before the connector sends
	// any check; an error drops the offer.
	VerifyOffer func(token string) error
	// TURNCredentials and Serve, both set, make a connector whose network
	// blocks UDP reachable: when a relay's STUN goes unanswered the agent
	// allocates on that relay over TLS (credentials from the controller,
	// POST PathTURNCredentials), calls Serve with a QUIC transport over the
	// allocation (the connector runs its QUIC server on it too, until the
	// transport closes) and offers the relayed address to clients.
	TURNCredentials func(ctx context.Context) (controlapi.TURNCredentials, error)
	Serve           func(tr *quic.Transport)
	// SignalPing is how often the signaling link to each relay is pinged
	// (default 5 s); a link silent for three of them is redialed.
	SignalPing time.Duration
	Logger     *slog.Logger
}

// ConnectorAgent keeps a signaling connection to every listed relay, learns
// the connector's server-reflexive address from them, and answers clients'
// offers by punching towards their candidates from the QUIC socket.
type ConnectorAgent struct {
	cfg ConnectorAgentConfig
	log *slog.Logger
	m   *mux

	mu       sync.Mutex
	relays   map[string]*relayLink // relay id -> link
	sessions map[string]*connSession
	srflx    map[string]string // relay id -> mapped address
	allocs   []*relayAllocation
	ctx      context.Context
	wg       sync.WaitGroup
	// nat64 rewrites relay addresses on an IPv6-only network (nat64.go).
	nat64 *nat64
}

type relayLink struct {
	info   controlapi.RelayInfo
	cancel context.CancelFunc
	mu     sync.Mutex
	conn   *sigwire.Conn
	up     bool
	// turnBusy: an allocation over TLS on this relay is being made or
	// is in use (connector_turn.go).
	turnBusy bool
}

type connSession struct {
	s      *session
	link   *relayLink
	cancel context.CancelFunc

	mu      sync.Mutex
	remotes []*net.UDPAddr // the client's candidates (TURN permissions)
}

// NewConnectorAgent validates cfg.
func NewConnectorAgent(cfg ConnectorAgentConfig) (*ConnectorAgent, error) {
	if cfg.Transport == nil || cfg.Certificate == nil {
		return nil, fmt.Errorf("%w: connector agent needs Transport and Certificate", ErrBadConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SignalPing <= 0 {
		cfg.SignalPing = linkPing
	}
	a := &ConnectorAgent{cfg: cfg, log: cfg.Logger.With("part", "traversal"),
		relays: map[string]*relayLink{}, sessions: map[string]*connSession{}, srflx: map[string]string{}, nat64: defaultNAT64}
	a.m = newMux(cfg.Transport, "udp", a.log)
	switch uc := cfg.Transport.Conn.(type) {
	case *net.UDPConn:
		a.m.primer = lowTTLPrimer(uc)
	case *udpgro.Conn:
		a.m.primer = lowTTLPrimer(uc.UDPConn)
	}
	return a, nil
}

// Run serves until ctx ends. Call SetRelays before or while it runs.
func (a *ConnectorAgent) Run(ctx context.Context) error {
	a.mu.Lock()
	a.ctx = ctx
	pending := make([]*relayLink, 0, len(a.relays))
	for _, l := range a.relays {
		pending = append(pending, l)
	}
	a.mu.Unlock()
	for _, l := range pending {
		a.startLink(l)
	}
	err := a.m.run(ctx)
	a.mu.Lock()
	for _, l := range a.relays {
		if l.cancel != nil {
			l.cancel()
		}
	}
	for _, s := range a.sessions {
		s.cancel()
	}
	a.mu.Unlock()
	a.wg.Wait()
	return err
}

// SetRelays replaces the relay set (from each ConnectorPolicy snapshot):
// links to new relays start, links to removed relays stop.
//
// On an IPv6-only network the relays' IPv4 literals are rewritten to the
// network's NAT64 prefix, as the client's dialer does (nat64.go), so a
// connector there reaches IPv4 relays too.
func (a *ConnectorAgent) SetRelays(relays []controlapi.RelayInfo) {
	want := map[string]controlapi.RelayInfo{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range usableRelays(relays) {
		r.UDPAddr = a.nat64.translate(ctx, r.UDPAddr, true)
		r.TLSAddr = a.nat64.translate(ctx, r.TLSAddr, true)
		want[r.ID] = r
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, l := range a.relays {
		if r, ok := want[id]; !ok || r.TLSAddr != l.info.TLSAddr || r.UDPAddr != l.info.UDPAddr || r.TLSCertSHA256 != l.info.TLSCertSHA256 {
			if l.cancel != nil {
				l.cancel()
			}
			delete(a.relays, id)
			delete(a.srflx, id)
		}
	}
	for id, r := range want {
		if _, ok := a.relays[id]; ok {
			continue
		}
		l := &relayLink{info: r}
		a.relays[id] = l
		if a.ctx != nil {
			a.startLinkLocked(l)
		}
	}
}

func (a *ConnectorAgent) startLink(l *relayLink) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.startLinkLocked(l)
}

func (a *ConnectorAgent) startLinkLocked(l *relayLink) {
	if l.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(a.ctx)
	l.cancel = cancel
	a.wg.Add(2)
	go func() { defer a.wg.Done(); a.linkLoop(ctx, l) }()
	go func() { defer a.wg.Done(); a.stunLoop(ctx, l) }()
}

// Connected reports, per relay id, whether its signaling link is up.
func (a *ConnectorAgent) Connected() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]bool{}
	for id, l := range a.relays {
		l.mu.Lock()
		out[id] = l.up
		l.mu.Unlock()
	}
	return out
}

func (a *ConnectorAgent) hasReflexive(addr string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.srflx {
		if x == addr {
			return true
		}
	}
	return false
}

// ReflexiveAddrs returns the server-reflexive addresses learned so far.
func (a *ConnectorAgent) ReflexiveAddrs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, s := range a.srflx {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (a *ConnectorAgent) stunLoop(ctx context.Context, l *relayLink) {
	server, err := net.ResolveUDPAddr("udp", l.info.UDPAddr)
	if err != nil {
		a.log.Warn("relay UDP address", "relay", l.info.Name, "err", err)
		return
	}
	retry := stunRetry
	failures := 0
	for {
		wait := stunRefresh
		if mapped, err := a.m.reflexive(ctx, server); err == nil {
			a.setReflexive(l.info, mapped.String())
			retry, failures = stunRetry, 0
		} else if ctx.Err() == nil {
			a.log.Debug("STUN to relay", "relay", l.info.Name, "err", err)
			wait, retry = retry, min(retry*2, stunRefresh)
			failures++
			a.stunFailed(ctx, l, failures)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// setReflexive records the server-reflexive address seen by relay r. A new
// one is advertised, and trickled to every running session (a session whose
// offer came before the connector knew it would otherwise never check it,
// and the client would never permit it on its TURN allocation).
func (a *ConnectorAgent) setReflexive(r controlapi.RelayInfo, s string) {
	a.mu.Lock()
	old := a.srflx[r.ID]
	a.srflx[r.ID] = s
	type out struct {
		id   string
		link *relayLink
	}
	var sessions []out
	if old != s {
		for id, cs := range a.sessions {
			sessions = append(sessions, out{id, cs.link})
		}
	}
	a.mu.Unlock()
	if old == s {
		return
	}
	a.log.Info("server-reflexive address", "relay", r.Name, "addr", s)
	if a.cfg.AdvertiseAddr != nil {
		a.cfg.AdvertiseAddr(s)
	}
	if old != "" && a.cfg.WithdrawAddr != nil && !a.hasReflexive(old) {
		a.cfg.WithdrawAddr(old)
	}
	for _, x := range sessions {
		x.link.mu.Lock()
		c := x.link.conn
		x.link.mu.Unlock()
		if c == nil {
			continue
		}
		if err := c.Write(&sigwire.Message{Type: sigwire.TypeCandidate, Session: x.id,
			Candidates: []sigwire.Candidate{{Type: sigwire.CandSrflx, Addr: s}}}); err != nil {
			a.log.Debug("trickle server-reflexive address", "session", x.id, "err", err)
		}
	}
}

// linkLoop keeps one signaling connection up, reconnecting with backoff.
func (a *ConnectorAgent) linkLoop(ctx context.Context, l *relayLink) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := a.serveLink(ctx, l)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = 500 * time.Millisecond
		}
		a.log.Warn("relay signaling link down", "relay", l.info.Name, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (a *ConnectorAgent) serveLink(ctx context.Context, l *relayLink) error {
	cert, err := a.cfg.Certificate()
	if err != nil {
		return fmt.Errorf("connector certificate: %w", err)
	}
	c, _, err := dialSignal(ctx, l.info, cert, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector})
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.conn, l.up = c, true
	l.mu.Unlock()
	a.log.Info("relay signaling link up", "relay", l.info.Name, "addr", l.info.TLSAddr)
	done := make(chan struct{})
	defer func() {
		close(done)
		c.Close()
		l.mu.Lock()
		l.conn, l.up = nil, false
		l.mu.Unlock()
		a.endSessions(l)
	}()
	go func() {
		t := time.NewTicker(a.cfg.SignalPing)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				c.Close()
				return
			case <-done:
				return
			case <-t.C:
				if c.Write(&sigwire.Message{Type: sigwire.TypePing}) != nil {
					return
				}
			}
		}
	}()
	for {
		// The relay answers every ping: silence this long means the link
		// is gone even if no reset arrived.
		_ = c.SetReadDeadline(time.Now().Add(linkDeadPings * a.cfg.SignalPing))
		m, err := c.Read()
		if err != nil {
			return fmt.Errorf("read from relay %s: %w", l.info.Name, err)
		}
		switch m.Type {
		case sigwire.TypeOffer:
			a.onOffer(ctx, l, c, m)
		case sigwire.TypeCandidate:
			a.onCandidates(m)
		case sigwire.TypeBye:
			a.endSession(m.Session)
		}
	}
}

func (a *ConnectorAgent) onOffer(ctx context.Context, l *relayLink, c *sigwire.Conn, m *sigwire.Message) {
	if m.Session == "" || m.Ufrag == "" || m.Pwd == "" {
		return
	}
	if a.cfg.VerifyOffer != nil {
		if err := a.cfg.VerifyOffer(m.Token); err != nil {
			a.log.Warn("offer refused", "session", m.Session, "err", err)
			_ = c.Write(&sigwire.Message{Type: sigwire.TypeError, Session: m.Session, Error: "connection token refused by connector"})
			return
		}
	}
	a.mu.Lock()
	if _, dup := a.sessions[m.Session]; dup || len(a.sessions) >= maxSessionsTotal {
		a.mu.Unlock()
		return
	}
	s := newSession(a.log.With("session", m.Session))
	sctx, cancel := context.WithTimeout(ctx, sessionMaxLife)
	cs := &connSession{s: s, link: l, cancel: cancel}
	a.sessions[m.Session] = cs
	remotes := resolveCandidates(m.Candidates)
	cs.addRemotes(remotes)
	var cands []sigwire.Candidate
	cands = append(cands, hostCandidates(a.cfg.Transport.Conn.LocalAddr(), DefaultExcludedPrefixes)...)
	seen := map[string]bool{}
	for _, x := range a.srflx {
		if !seen[x] {
			seen[x] = true
			cands = append(cands, sigwire.Candidate{Type: sigwire.CandSrflx, Addr: x})
		}
	}
	relayed, als := a.joinAllocationsLocked(cs)
	cands = append(cands, relayed...)
	a.mu.Unlock()
	for _, al := range als {
		if err := al.permit(cs.remoteAddrs()); err != nil {
			a.log.Debug("TURN permission", "err", err)
		}
	}
	s.attach(a.m)
	// Open our own NAT's mappings towards the client's candidates before
	// the answer lets the client's checks reach it, then hold our checks
	// until the client's first check arrives: our packets must not reach
	// the client's NAT before the client has sent through it.
	s.hold(connectorHold)
	s.setRemote(m.Ufrag, m.Pwd)
	for _, x := range remotes {
		s.addTarget(a.m, x.addr, x.kind)
	}
	a.primeAll(remotes)
	a.log.Info("offer", "session", m.Session, "principal", m.Principal, "device", m.Device, "candidates", len(m.Candidates))
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		s.run(sctx)
		s.detach()
		a.mu.Lock()
		if cs := a.sessions[m.Session]; cs != nil && cs.s == s {
			delete(a.sessions, m.Session)
		}
		a.mu.Unlock()
		cancel()
	}()
	_ = c.Write(&sigwire.Message{Type: sigwire.TypeAnswer, Session: m.Session, Ufrag: s.lufrag, Pwd: s.lpwd, Candidates: cands})
}

func (a *ConnectorAgent) onCandidates(m *sigwire.Message) {
	a.mu.Lock()
	cs := a.sessions[m.Session]
	a.mu.Unlock()
	if cs == nil {
		return
	}
	remotes := resolveCandidates(m.Candidates)
	a.permitOnAllocations(cs.addRemotes(remotes))
	for _, x := range remotes {
		a.log.Debug("remote candidate", "session", m.Session, "addr", x.addr.String(), "kind", x.kind)
		cs.s.addTarget(a.m, x.addr, x.kind)
	}
	a.primeAll(remotes)
}

// primeAll sends a primer to each punchable candidate now (the session's
// own round primes again later, before its first check).
func (a *ConnectorAgent) primeAll(cs []typedAddr) {
	for _, x := range cs {
		if x.kind == sigwire.CandRelay {
			continue
		}
		if err := a.m.prime(x.addr); err != nil {
			a.log.Debug("primer", "to", x.addr.String(), "err", err)
		}
	}
}

func (a *ConnectorAgent) endSession(id string) {
	a.mu.Lock()
	cs := a.sessions[id]
	delete(a.sessions, id)
	a.mu.Unlock()
	if cs != nil {
		cs.cancel()
	}
}

func (a *ConnectorAgent) endSessions(l *relayLink) {
	a.mu.Lock()
	var ids []string
	for id, cs := range a.sessions {
		if cs.link == l {
			ids = append(ids, id)
		}
	}
	a.mu.Unlock()
	for _, id := range ids {
		a.endSession(id)
	}
}
