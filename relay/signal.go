package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
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
	h.register(p)
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
	p.role, p.connector = sigwire.RoleConnector, id
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
	h.mu.Lock()
	n := h.perP[claims.Subject]
	h.mu.Unlock()
	if n >= h.r.cfg.MaxSessionsPerPrincipal {
		h.r.m.refuse("quota")
		return fmt.Errorf("%w: %d signaling sessions", ErrQuota, n)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	p.role, p.connector, p.session = sigwire.RoleClient, hello.Connector, hex.EncodeToString(b[:])
	p.principal, p.device, p.token = claims.Subject, claims.Device, hello.Token
	return nil
}

func (h *hub) register(p *sigPeer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.role == sigwire.RoleConnector {
		h.connectors[p.connector] = p
	} else {
		h.sessions[p.session] = p
		h.perP[p.principal]++
		h.r.m.sessions.Inc()
	}
	h.r.m.peers.WithLabelValues(p.role).Inc()
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
	h.mu.Unlock()
	if cl == nil || cl.connector != p.connector {
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
