package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
	"postern.dev/postern/traversal/stunguard"
)

// Defaults.
const (
	DefaultMaxAllocationsPerPrincipal = 32
	DefaultMaxSessionsPerPrincipal    = 64
	handshakeTimeout                  = 10 * time.Second
	// turnIdleWait is how long a TURN-over-TLS connection may go without an
	// authenticated request pion accepted (in practice its Allocate); then
	// it is closed. Before, a connection that sent nothing after the TLS
	// handshake stayed open for good.
	turnIdleWait = 10 * time.Second
)

// Config configures a Relay.
type Config struct {
	ListenUDP string // STUN and TURN over UDP, e.g. ":3478"
	ListenTLS string // TURN over TLS and signaling, e.g. ":443"
	PublicIP  net.IP // the address relayed sockets are advertised at
	// RelayIP is the local IP relayed sockets bind to, never a wildcard, so
	// relayed packets leave from the address peers send to. Default: the
	// IP of ListenUDP; when that is a wildcard, PublicIP if it is an address
	// of this host; otherwise New refuses (see ResolveRelayIP).
	RelayIP net.IP
	Realm   string
	// UDPConn and TLSListener, when set, are the already-open sockets of
	// ListenUDP and ListenTLS (Run opens them before enrolling, so that an
	// address it cannot bind fails at once).
	UDPConn     net.PacketConn
	TLSListener net.Listener
	// TLSCert is the certificate of the TLS listener (self-signed; its digest
	// reaches clients through the controller and they pin it).
	TLSCert tls.Certificate
	// CA verifies connectors' client certificates on the signaling service.
	CA *x509.Certificate
	// Quotas: TURN client endpoints (allocations) and signaling sessions per
	// principal; 0 means the default.
	MaxAllocationsPerPrincipal int
	MaxSessionsPerPrincipal    int
	// turnIdleWait overrides the package's turnIdleWait (tests).
	turnIdleWait time.Duration
	// tlsHandshakesPerAddr overrides maxTLSHandshakesPerAddr (tests).
	tlsHandshakesPerAddr int
	// AllowLoopbackPeers lets allocations relay to loopback and unspecified
	// peers and to the relay's own addresses (in-process tests that run
	// everything on one host only; off in production).
	AllowLoopbackPeers bool
	Logger             *slog.Logger

	// Tests only: pion's channel binding lifetime (0: ten minutes) and
	// how long pion's framing vouches for a peer in the bypass (0:
	// bypassConfirm).
	channelBindTimeout time.Duration
	bypassConfirm      time.Duration
}

// Relay is a running relay.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	auth    *turnAuth
	m       *metrics
	hub     *hub
	keys    *ctoken.KeySet
	vmu     sync.RWMutex
	issuer  string
	udp     net.PacketConn
	udpTURN *filterConn // udp as pion/turn sees it
	tcp     net.Listener
	turnLn  *chanListener
	turnSrv *turn.Server
	// TURN-over-TLS connections by client endpoint, to cut off revoked ones.
	tmu     sync.Mutex
	tlsTURN map[string]net.Conn

	tlsAdmit *tlsAdmission // TLS handshakes in progress (tlsadmit.go)
	// The revision of the last policy applied (SetPolicy).
	pmu       sync.Mutex
	policyRev atomic.Int64
	// running: Start finished and Close not called; hasPolicy: SetPolicy
	// was called (health.go).
	running   atomic.Bool
	hasPolicy atomic.Bool
	wg        sync.WaitGroup
	ctx       context.Context
	cancel    context.CancelFunc
	closeMu   sync.Once
}

// New validates cfg and prepares a relay; Start opens its sockets.
func New(cfg Config) (*Relay, error) {
	switch {
	case cfg.ListenUDP == "":
		return nil, fmt.Errorf("%w: no UDP listen address", ErrBadConfig)
	case cfg.ListenTLS == "":
		return nil, fmt.Errorf("%w: no TLS listen address", ErrBadConfig)
	case cfg.PublicIP == nil:
		return nil, fmt.Errorf("%w: no public IP", ErrBadConfig)
	case cfg.Realm == "":
		return nil, fmt.Errorf("%w: no realm", ErrBadConfig)
	case len(cfg.TLSCert.Certificate) == 0:
		return nil, fmt.Errorf("%w: no TLS certificate", ErrBadConfig)
	case cfg.CA == nil:
		return nil, fmt.Errorf("%w: no deployment CA", ErrBadConfig)
	}
	if cfg.MaxAllocationsPerPrincipal == 0 {
		cfg.MaxAllocationsPerPrincipal = DefaultMaxAllocationsPerPrincipal
	}
	if cfg.MaxSessionsPerPrincipal == 0 {
		cfg.MaxSessionsPerPrincipal = DefaultMaxSessionsPerPrincipal
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rip, err := ResolveRelayIP(cfg.ListenUDP, cfg.PublicIP, cfg.RelayIP)
	if err != nil {
		return nil, err
	}
	cfg.RelayIP = rip
	r := &Relay{cfg: cfg, log: cfg.Logger, keys: ctoken.NewKeySet(nil)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.m = newMetrics(func() float64 {
		if r.turnSrv == nil {
			return 0
		}
		return float64(r.turnSrv.AllocationCount())
	})
	r.auth = newTURNAuth(cfg.MaxAllocationsPerPrincipal, r.m.refuse)
	r.auth.warn = r.log.Warn
	r.hub = newHub(r)
	r.auth.denied = r.hub.denied
	r.tlsTURN = map[string]net.Conn{}
	r.tlsAdmit = newTLSAdmission(cfg.tlsHandshakesPerAddr, 0)
	return r, nil
}

// SetCredentials installs what the controller's registration response
// carries: the TURN secret, and the issuer and JWKS that Connection Tokens
// presented on the signaling service must verify against.
func (r *Relay) SetCredentials(turnSecret, issuer string, jwks json.RawMessage) error {
	if turnSecret == "" {
		return fmt.Errorf("%w: empty TURN secret", ErrBadConfig)
	}
	if issuer == "" {
		return fmt.Errorf("%w: empty token issuer", ErrBadConfig)
	}
	keys, err := ctoken.ParseJWKS(jwks)
	if err != nil {
		return fmt.Errorf("relay credentials: %w", err)
	}
	r.keys.Replace(keys)
	r.vmu.Lock()
	r.issuer = issuer
	r.vmu.Unlock()
	r.auth.setSecret(turnSecret)
	return nil
}

func (r *Relay) verifier() *ctoken.Verifier {
	r.vmu.RLock()
	defer r.vmu.RUnlock()
	return &ctoken.Verifier{Issuer: r.issuer, Keys: r.keys}
}

// Start opens the UDP and TLS listeners and starts serving.
func (r *Relay) Start() error {
	udp, tcp := r.cfg.UDPConn, r.cfg.TLSListener
	var err error
	if udp == nil {
		if udp, err = net.ListenPacket("udp", r.cfg.ListenUDP); err != nil {
			return fmt.Errorf("%w: --listen-udp %s: %w", ErrBadConfig, r.cfg.ListenUDP, err)
		}
	}
	if tcp == nil {
		if tcp, err = net.Listen("tcp", r.cfg.ListenTLS); err != nil {
			udp.Close()
			return fmt.Errorf("%w: --listen-tls %s: %w", ErrBadConfig, r.cfg.ListenTLS, err)
		}
	}
	r.udp, r.tcp = udp, tcp
	// What the relay sends its clients keeps the size it has (see
	// setDontFragment).
	if err := setDontFragment(udp); err != nil {
		r.log.Warn("TURN socket sends without don't-fragment", "err", err)
	}
	r.turnLn = newChanListener(tcp.Addr())
	gen := func(flush *flushSet) turn.RelayAddressGenerator {
		return &countingGenerator{
			flush:                 flush,
			RelayAddressGenerator: &familyGenerator{publicIP: r.cfg.PublicIP, relayIP: r.cfg.RelayIP},
			toPeer:                r.m.bytes.WithLabelValues("to_peer"),
			fromPeer:              r.m.bytes.WithLabelValues("from_peer"),
			toPeerPkt:             r.m.packets.WithLabelValues("to_peer"),
			fromPeerP:             r.m.packets.WithLabelValues("from_peer"),
		}
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	// Writes to peers are queued only when the read loop that flushes them
	// reads in batches (a UDP socket on Linux).
	flush := &flushSet{}
	udpConn := newFilterConn(udp, r.auth.isBlocked, flush)
	udpConn.responded = r.auth.observe
	if udpConn.rd == nil {
		flush = nil
	}
	udpConn.malformed = func() { r.m.refuse("malformed") }
	if r.cfg.bypassConfirm > 0 {
		udpConn.confirm = r.cfg.bypassConfirm
	}
	r.udpTURN = udpConn
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:              r.cfg.Realm,
		AuthHandler:        r.auth.handler(r.log.Debug),
		LoggerFactory:      lf,
		ChannelBindTimeout: r.cfg.channelBindTimeout,
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            udpConn,
			RelayAddressGenerator: &udpReleaser{RelayAddressGenerator: gen(flush), src: udpConn, release: r.auth.release},
			PermissionHandler:     r.permit,
		}},
		ListenerConfigs: []turn.ListenerConfig{{
			Listener: r.turnLn, RelayAddressGenerator: gen(nil), PermissionHandler: r.permit,
		}},
	})
	if err != nil {
		udp.Close()
		tcp.Close()
		return fmt.Errorf("start TURN server: %w", err)
	}
	r.turnSrv = srv
	r.running.Store(true)
	r.wg.Add(1)
	go r.acceptTLS()
	r.log.Info("relay listening", "udp", udp.LocalAddr().String(), "tls", tcp.Addr().String(),
		"public_ip", r.cfg.PublicIP.String(), "relay_ip", r.cfg.RelayIP.String())
	return nil
}

// UDPAddr is the bound UDP address.
func (r *Relay) UDPAddr() net.Addr { return r.udp.LocalAddr() }

// TLSAddr is the bound TLS address.
func (r *Relay) TLSAddr() net.Addr { return r.tcp.Addr() }

// TLSCertSHA256 is the digest clients pin.
func (r *Relay) TLSCertSHA256() string { return pki.CertDigest(r.cfg.TLSCert.Certificate[0]) }

// MetricsHandler serves /metrics (Prometheus), /healthz and /readyz
// (health.go) for the operator's --metrics address.
func (r *Relay) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+controlapi.PathHealth, r.handleHealth)
	mux.HandleFunc("GET "+pathReady, r.handleReady)
	return mux
}

// Stats summarizes the metrics for the controller heartbeat.
func (r *Relay) Stats() map[string]float64 {
	out := map[string]float64{}
	mfs, err := r.m.reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := 0.0
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			}
			out[mf.GetName()] += v
		}
	}
	return out
}

func (r *Relay) acceptTLS() {
	defer r.wg.Done()
	tlsConf := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{r.cfg.TLSCert},
		NextProtos:             []string{sigwire.ALPNSignal, sigwire.ALPNTURN},
		ClientAuth:             tls.RequestClientCert, // verified per role by the signaling service
		SessionTicketsDisabled: true,
	}
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.log.Error("accept TLS", "err", err)
			}
			return
		}
		done, ok := r.tlsAdmit.admit(c.RemoteAddr())
		if !ok {
			// Closed before any TLS: this source (or everyone) has too many
			// handshakes running.
			r.m.refuse("tls_busy")
			c.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.handleTLS(tls.Server(c, tlsConf), done)
		}()
	}
}

func (r *Relay) handleTLS(c *tls.Conn, handshook func()) {
	ctx, cancel := context.WithTimeout(r.ctx, handshakeTimeout)
	err := c.HandshakeContext(ctx)
	cancel()
	handshook()
	if err != nil {
		r.m.refuse("tls")
		r.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	switch c.ConnectionState().NegotiatedProtocol {
	case sigwire.ALPNTURN:
		// pion frames the stream itself; the guard drops the STUN frames
		// pion/stun would panic on before pion sees them.
		r.turnLn.deliver(stunguard.StreamConn(r.trackTURN(c)))
	case sigwire.ALPNSignal:
		r.hub.serve(c)
	default:
		r.m.refuse("tls")
		c.Close()
	}
}

// Close stops the relay and waits for its goroutines.
func (r *Relay) Close() error {
	var err error
	r.closeMu.Do(func() {
		r.running.Store(false)
		r.cancel()
		if r.tcp != nil {
			r.tcp.Close()
		}
		r.hub.closeAll()
		if r.turnLn != nil {
			r.turnLn.Close()
		}
		if r.turnSrv != nil {
			err = r.turnSrv.Close()
		} else if r.udp != nil {
			r.udp.Close()
		}
		r.wg.Wait()
	})
	return err
}
