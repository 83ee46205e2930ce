package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
)

const (
	helloTimeout = 10 * time.Second
	idleTimeout  = 90 * time.Second // peers ping every 20 s
	// maxSessionIPs bounds the candidate addresses remembered per session
	// and direction.
	maxSessionIPs = 128
)

func isErr(err, target error) bool { return errors.Is(err, target) }

// hub routes signaling messages between client sessions and connectors.
type hub struct {
	r          *Relay
	mu         sync.Mutex
	connectors map[string]*sigPeer // connector id -> newest connection
	sessions   map[string]*sigPeer // session id -> client
	perP       map[string]int      // principal -> open sessions
	all        map[*sigPeer]struct{}
	// keys is the controller's list of connectors and their key digests;
	// nil until the first policy (in-process use without a controller),
	// then only listed connectors with their current key may register.
	keys    map[string]string
	revoked map[string]bool // device ids
	// afterAuth, when set (tests), runs between a peer's authentication
	// and its registration.
	afterAuth func()
}

type sigPeer struct {
	c         *sigwire.Conn
	tc        *tls.Conn
	role      string
	connector string // connector id (both roles)
	session   string // clients
	principal string
	device    string
	token     string
	keySHA256 string // connectors: digest of the certificate's key
	// Candidate addresses exchanged in a client session (IPs only: TURN
	// permissions are per IP): those the connector sent to the client, and
	// those the client sent to the connector (not host candidates).
	fromConnector map[netip.Addr]struct{}
	fromClient    map[netip.Addr]struct{}
	// relayed: addresses of relayed candidates (TURN allocations) either
	// side offered; the only addresses of the relay itself a permission may
	// name (both sides behind UDP-blocking networks: the relay bridges two
	// allocations of one live session).
	relayed map[netip.Addr]struct{}
}

func newHub(r *Relay) *hub {
	return &hub{r: r, connectors: map[string]*sigPeer{}, sessions: map[string]*sigPeer{}, perP: map[string]int{}, all: map[*sigPeer]struct{}{}}
}

func (h *hub) refuse(p *sigPeer, reason string, err error) {
	h.r.m.refuse(reason)
	h.r.log.Info("signaling refused", "remote", p.tc.RemoteAddr().String(), "reason", reason, "err", err)
	_ = p.c.Write(&sigwire.Message{Type: sigwire.TypeError, Error: err.Error()})
}

// serve runs one signaling connection to its end.
func (h *hub) serve(tc *tls.Conn) {
	p := &sigPeer{c: sigwire.NewConn(tc), tc: tc}
	defer tc.Close()
	h.mu.Lock()
	h.all[p] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.all, p)
		h.mu.Unlock()
	}()
	_ = tc.SetReadDeadline(time.Now().Add(helloTimeout))
	hello, err := p.c.Read()
	if err != nil {
		h.r.m.refuse("signal_auth")
		return
	}
	if hello.Type != sigwire.TypeHello {
		h.refuse(p, "signal_auth", fmt.Errorf("%w: first message must be hello, got %q", ErrUnauthorized, hello.Type))
		return
	}
	switch hello.Role {
	case sigwire.RoleConnector:
		if err := h.authConnector(p, hello); err != nil {
			h.refuse(p, "signal_auth", err)
			return
		}
	case sigwire.RoleClient:
		if err := h.authClient(p, hello); err != nil {
			h.refuse(p, "signal_auth", err)
			return
		}
	default:
		h.refuse(p, "signal_auth", fmt.Errorf("%w: unknown role %q", ErrUnauthorized, hello.Role))
		return
	}
	if h.afterAuth != nil {
		h.afterAuth()
	}
	if err := h.register(p); err != nil {
		reason := "signal_auth"
		if errors.Is(err, ErrQuota) {
			reason = "quota"
		}
		h.refuse(p, reason, err)
		return
	}
	defer h.unregister(p)
	if err := p.c.Write(&sigwire.Message{Type: sigwire.TypeWelcome, Session: p.session, Connector: p.connector}); err != nil {
		return
	}
	lim := rate.NewLimiter(50, 200)
	for {
		_ = tc.SetReadDeadline(time.Now().Add(idleTimeout))
		m, err := p.c.Read()
		if err != nil {
			return
		}
		if !lim.Allow() {
			h.r.m.refuse("signal_rate")
			continue
		}
		h.route(p, m)
	}
}

func (h *hub) authConnector(p *sigPeer, hello *sigwire.Message) error {
	certs := p.tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return fmt.Errorf("%w: connector presented no client certificate", ErrUnauthorized)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: pki.CAPool(h.r.cfg.CA), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("%w: connector certificate: %v", ErrUnauthorized, err)
	}
	id, ok := strings.CutPrefix(certs[0].Subject.CommonName, "connector:")
	if !ok || id == "" {
		return fmt.Errorf("%w: certificate %q is not a connector's", ErrUnauthorized, certs[0].Subject.CommonName)
	}
	if hello.Connector != "" && hello.Connector != id {
		return fmt.Errorf("%w: hello names connector %q, certificate %q", ErrUnauthorized, hello.Connector, id)
	}
	p.role, p.connector, p.keySHA256 = sigwire.RoleConnector, id, pki.CertDigest(certs[0].RawSubjectPublicKeyInfo)
	return nil
}

func (h *hub) authClient(p *sigPeer, hello *sigwire.Message) error {
	if hello.Connector == "" || hello.Token == "" {
		return fmt.Errorf("%w: client hello needs connector and token", ErrUnauthorized)
	}
	claims, err := h.r.verifier().Verify(hello.Token, hello.Connector)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	certs := p.tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return fmt.Errorf("%w: client presented no device certificate", ErrUnauthorized)
	}
	pub, ok := certs[0].PublicKey.(ed25519.PublicKey)
	if !ok || pki.KeyThumbprint(pub) != claims.Cnf.JKT {
		return fmt.Errorf("%w: device certificate is not the key the token is bound to", ErrUnauthorized)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	p.role, p.connector, p.session = sigwire.RoleClient, hello.Connector, hex.EncodeToString(b[:])
	p.principal, p.device, p.token = claims.Subject, claims.Device, hello.Token
	return nil
}

// register admits an authenticated peer. Everything that depends on shared
// state is decided here under one hold of the lock: the controller's list of
// connectors and keys, revoked devices, and the per-principal session quota
// (checked and reserved together, so concurrent hellos cannot exceed it).
func (h *hub) register(p *sigPeer) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.role == sigwire.RoleConnector {
		if err := h.connectorAllowedLocked(p); err != nil {
			return err
		}
		h.connectors[p.connector] = p
	} else {
		if h.revoked[p.device] {
			return fmt.Errorf("%w: device %s", ErrRevoked, p.device)
		}
		if n := h.perP[p.principal]; n >= h.r.cfg.MaxSessionsPerPrincipal {
			return fmt.Errorf("%w: principal %s already has %d signaling sessions", ErrQuota, p.principal, n)
		}
		h.perP[p.principal]++
		p.fromConnector, p.fromClient, p.relayed = map[netip.Addr]struct{}{}, map[netip.Addr]struct{}{}, map[netip.Addr]struct{}{}
		h.sessions[p.session] = p
		h.r.m.sessions.Inc()
	}
	h.r.m.peers.WithLabelValues(p.role).Inc()
	return nil
}

// connectorAllowedLocked checks a connector against the controller's list.
func (h *hub) connectorAllowedLocked(p *sigPeer) error {
	if h.keys == nil {
		return nil
	}
	want, ok := h.keys[p.connector]
	switch {
	case !ok:
		return fmt.Errorf("%w: connector %s is not enrolled at the controller (deleted?)", ErrRevoked, p.connector)
	case !pki.DigestEqual(want, p.keySHA256):
		return fmt.Errorf("%w: connector %s presents a key the controller replaced", ErrRevoked, p.connector)
	}
	return nil
}

// setPolicy installs the controller's connectors and revoked devices and
// closes the signaling connections that no longer match: connectors deleted
// or re-keyed, sessions of revoked devices or to deleted connectors.
func (h *hub) setPolicy(keys map[string]string, revoked map[string]bool) {
	var drop []*sigPeer
	h.mu.Lock()
	h.keys, h.revoked = keys, revoked
	for _, c := range h.connectors {
		if err := h.connectorAllowedLocked(c); err != nil {
			drop = append(drop, c)
			h.r.log.Info("dropping connector signaling", "connector", c.connector, "err", err)
		}
	}
	for _, s := range h.sessions {
		_, known := keys[s.connector]
		if revoked[s.device] || (keys != nil && !known) {
			drop = append(drop, s)
			h.r.log.Info("dropping client signaling session", "session", s.session, "device", s.device, "connector", s.connector)
		}
	}
	h.mu.Unlock()
	for _, p := range drop {
		h.r.m.refuse("revoked")
		p.tc.Close()
	}
}

// denied reports whether a TURN identity lost its access: a revoked device,
// or a connector the controller no longer lists.
func (h *hub) denied(id turnIdentity) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if id.device != "" && h.revoked[id.device] {
		return true
	}
	if cid, ok := strings.CutPrefix(id.principal, "connector:"); ok && h.keys != nil {
		_, known := h.keys[cid]
		return !known
	}
	return false
}

// peerAllowed reports whether the TURN identity id may relay to peer: peer
// must be an address exchanged in a live signaling session of that identity.
// A client (principal, device) may reach the candidates its connector sent in
// one of its sessions, and the address the connector's signaling connection
// comes from; a connector may reach the non-host candidates of the clients in
// its sessions and the addresses their signaling connections come from.
func (h *hub) peerAllowed(id turnIdentity, peer netip.Addr) bool {
	peer = peer.Unmap()
	h.mu.Lock()
	defer h.mu.Unlock()
	if cid, ok := strings.CutPrefix(id.principal, "connector:"); ok {
		for _, s := range h.sessions {
			if s.connector != cid {
				continue
			}
			if _, ok := s.fromClient[peer]; ok || remoteIP(s.tc) == peer {
				return true
			}
		}
		return false
	}
	for _, s := range h.sessions {
		if s.principal != id.principal || (id.device != "" && s.device != id.device) {
			continue
		}
		if _, ok := s.fromConnector[peer]; ok {
			return true
		}
		if c := h.connectors[s.connector]; c != nil && remoteIP(c.tc) == peer {
			return true
		}
	}
	return false
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// rememberRelayed adds the addresses of relayed candidates to set (bounded).
func rememberRelayed(set map[netip.Addr]struct{}, cs []sigwire.Candidate) {
	for _, c := range cs {
		if c.Type != sigwire.CandRelay {
			continue
		}
		if ap, err := netip.ParseAddrPort(c.Addr); err == nil && len(set) < maxSessionIPs {
			set[ap.Addr().Unmap()] = struct{}{}
		}
	}
}

// relayedPeerAllowed reports whether id may relay to peer, an address of
// this relay: only when peer is a relayed candidate of a live session of id
// that peerAllowed also admits (one allocation of the session towards the
// other).
func (h *hub) relayedPeerAllowed(id turnIdentity, peer netip.Addr) bool {
	peer = peer.Unmap()
	h.mu.Lock()
	found := false
	for _, s := range h.sessions {
		if _, ok := s.relayed[peer]; !ok {
			continue
		}
		if cid, ok := strings.CutPrefix(id.principal, "connector:"); ok {
			found = found || s.connector == cid
			continue
		}
		found = found || (s.principal == id.principal && (id.device == "" || s.device == id.device))
	}
	h.mu.Unlock()
	return found && h.peerAllowed(id, peer)
}

// remember adds the addresses of candidates to set (bounded).
func remember(set map[netip.Addr]struct{}, cs []sigwire.Candidate, hostToo bool) {
	for _, c := range cs {
		if !hostToo && c.Type == sigwire.CandHost {
			continue
		}
		ap, err := netip.ParseAddrPort(c.Addr)
		if err != nil || len(set) >= maxSessionIPs {
			continue
		}
		set[ap.Addr().Unmap()] = struct{}{}
	}
}

func (h *hub) unregister(p *sigPeer) {
	h.mu.Lock()
	var conn *sigPeer
	if p.role == sigwire.RoleConnector {
		if h.connectors[p.connector] == p {
			delete(h.connectors, p.connector)
		}
	} else {
		delete(h.sessions, p.session)
		if h.perP[p.principal]--; h.perP[p.principal] <= 0 {
			delete(h.perP, p.principal)
		}
		h.r.m.sessions.Dec()
		conn = h.connectors[p.connector]
	}
	h.mu.Unlock()
	h.r.m.peers.WithLabelValues(p.role).Dec()
	if conn != nil {
		_ = conn.c.Write(&sigwire.Message{Type: sigwire.TypeBye, Session: p.session})
	}
}

// route forwards one message from p.
func (h *hub) route(p *sigPeer, m *sigwire.Message) {
	switch m.Type {
	case sigwire.TypePing:
		_ = p.c.Write(&sigwire.Message{Type: sigwire.TypePong})
		return
	case sigwire.TypePong:
		return
	}
	for _, c := range m.Candidates {
		if err := c.Validate(); err != nil {
			_ = p.c.Write(&sigwire.Message{Type: sigwire.TypeError, Session: m.Session, Error: err.Error()})
			return
		}
	}
	if p.role == sigwire.RoleClient {
		switch m.Type {
		case sigwire.TypeOffer, sigwire.TypeCandidate, sigwire.TypeBye:
		default:
			return
		}
		out := &sigwire.Message{Type: m.Type, Session: p.session, Connector: p.connector, Ufrag: m.Ufrag, Pwd: m.Pwd, Candidates: m.Candidates}
		if m.Type == sigwire.TypeOffer {
			out.Principal, out.Device, out.Token = p.principal, p.device, p.token
		}
		h.mu.Lock()
		conn := h.connectors[p.connector]
		if conn != nil {
			remember(p.fromClient, m.Candidates, false)
			rememberRelayed(p.relayed, m.Candidates)
		}
		h.mu.Unlock()
		if conn == nil {
			h.r.m.refuse("not_connected")
			_ = p.c.Write(&sigwire.Message{Type: sigwire.TypeError, Session: p.session, Error: fmt.Sprintf("%v: %s", ErrNotConnected, p.connector)})
			return
		}
		_ = conn.c.Write(out)
		return
	}
	// Connector: answers, candidates and bye for its own sessions only.
	switch m.Type {
	case sigwire.TypeAnswer, sigwire.TypeCandidate, sigwire.TypeBye, sigwire.TypeError:
	default:
		return
	}
	h.mu.Lock()
	cl := h.sessions[m.Session]
	ok := cl != nil && cl.connector == p.connector
	if ok {
		remember(cl.fromConnector, m.Candidates, true)
		rememberRelayed(cl.relayed, m.Candidates)
	}
	h.mu.Unlock()
	if !ok {
		return
	}
	_ = cl.c.Write(&sigwire.Message{Type: m.Type, Session: m.Session, Connector: p.connector, Ufrag: m.Ufrag, Pwd: m.Pwd, Candidates: m.Candidates, Error: m.Error})
}

// connected reports whether a connector has a signaling connection.
func (h *hub) connected(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connectors[id] != nil
}

func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := range h.all {
		p.tc.Close()
	}
}
