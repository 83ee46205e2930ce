package connector

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/atomicfile"
	"postern.dev/postern/internal/bulkyield"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal"
	"postern.dev/postern/traversal/udpgro"
	"postern.dev/postern/wire"
)

// Defaults.
const (
	DefaultRotateInterval = 12 * time.Hour
	// DefaultCertOverlap keeps a rotated-out certificate serving long enough for
	// every token issued against it (TTL plus leeway plus heartbeat delay).
	DefaultCertOverlap = ctoken.DefaultTTL + ctoken.Leeway + 4*controlapi.HeartbeatInterval
	DefaultDialTimeout = 10 * time.Second
	DefaultUDPIdle     = 2 * time.Minute
	headerTimeout      = 10 * time.Second
	authWait           = 10 * time.Second
)

// Resolver resolves private names on the connector host. *net.Resolver
// implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures a Connector.
type Config struct {
	// StateDir holds the enrolled credential and the last policy.
	StateDir string
	// ListenUDP is the QUIC socket address; empty means any port on all addresses.
	ListenUDP string
	// MetricsAddr, if set, serves Prometheus metrics on /metrics and health on /healthz.
	MetricsAddr string
	// RotateInterval between fresh QUIC certificates (default 12 h).
	RotateInterval time.Duration
	// CertOverlap is how long a rotated-out certificate keeps serving
	// (default: token TTL + leeway + heartbeat slack). Never below the token TTL.
	CertOverlap time.Duration
	// DialTimeout bounds resolving and dialing a destination (default 10 s).
	DialTimeout time.Duration
	// UDPIdleTimeout ends UDP and ICMP flows without traffic (default 2 min).
	UDPIdleTimeout time.Duration
	// FailStaticMax bounds fail static (failstatic.go): how long after
	// losing the controller the connector keeps serving devices whose token
	// was valid then. 0: DefaultFailStaticMax; negative: off (tokens end at
	// their expiry whatever the controller's state).
	FailStaticMax time.Duration
	// BulkQueueTarget is the queueing delay a bulk download leaves on its
	// connection while interactive flows are active (package bulkyield).
	// 0: bulkyield.DefaultTarget; negative: bulk downloads never yield.
	BulkQueueTarget time.Duration
	// MaxFlowsPerDevice bounds the flows one device may have open at this
	// connector at once, over all its connections; more are answered
	// StatusTooManyFlows at once (devicelimit.go). 0: DefaultMaxFlowsPerDevice.
	MaxFlowsPerDevice int
	// MaxPendingConns bounds the client connections that have not yet
	// presented a token (handshake and token wait), in total; more are
	// refused with CONNECTION_REFUSED (admit.go). 0: DefaultMaxPendingConns.
	MaxPendingConns int
	// MaxPendingPerAddr is the same bound per source IP address.
	// 0: DefaultMaxPendingPerAddr.
	MaxPendingPerAddr int
	// parkAfter overrides defaultParkAfter (tests).
	parkAfter time.Duration
	// Resolver for private names (default net.DefaultResolver).
	Resolver Resolver
	// Dial, when set, opens the connection to a flow's destination instead
	// of the host's network: network is "tcp" or "udp", address "ip:port"
	// (after policy checks and name resolution). Tests use it to reach
	// in-process servers. A UDP connection must keep datagram boundaries
	// (one Write, one Read); ICMP flows always use the host's network.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock access requirements (MFA windows, grant ends,
	// auto-lock) are judged by; tests move it. Default time.Now.
	Now func() time.Time
}

// Connector is one running connector.
type Connector struct {
	cfg   Config
	log   *slog.Logger
	state atomic.Pointer[State]
	certs *certStore

	udp   *net.UDPConn
	tr    *quic.Transport
	agent *traversal.ConnectorAgent // NAT traversal on tr (relays, STUN, hole punching)

	policy atomic.Pointer[compiledPolicy]
	met    *metrics

	// interactive sees the answers of request/response flows
	// (bulkyield.Flow); bulk downloads yield to them down to bulkTarget
	// of queueing delay (priority.go; 0: never). Connector-wide: the CPU
	// and the UDP socket they share are the connector's.
	interactive bulkyield.Marker
	bulkTarget  time.Duration

	devFlows *deviceFlows // flows open per device (devicelimit.go)
	ready    *readiness   // wakes idle TCP flows' download sides (download.go); nil: a goroutine each
	admit    *admission   // connections awaiting a token (admit.go)

	events *eventQueue
	ctl    *controlClient

	mu       sync.Mutex
	sessions map[*session]struct{}
	extra    []string // advertised addresses added by the transport layer
	closed   bool

	controllerOK atomic.Bool
	ctlState     ctlState // the policy stream, for fail static
	metricsAddr  atomic.Pointer[string]
	wg           sync.WaitGroup // session and flow goroutines
	closeOnce    sync.Once
}

// Open loads the enrolled credential from cfg.StateDir, the last stored
// policy (so that it enforces it even if the controller is unreachable), makes
// a fresh QUIC certificate and binds the UDP socket.
func Open(cfg Config) (*Connector, error) {
	if cfg.RotateInterval <= 0 {
		cfg.RotateInterval = DefaultRotateInterval
	}
	if cfg.CertOverlap < ctoken.DefaultTTL+ctoken.Leeway {
		cfg.CertOverlap = DefaultCertOverlap
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = DefaultUDPIdle
	}
	if cfg.FailStaticMax == 0 {
		cfg.FailStaticMax = DefaultFailStaticMax
	}
	if err := validateFailStaticMax(cfg.FailStaticMax); err != nil {
		return nil, err
	}
	if cfg.MaxFlowsPerDevice < 0 {
		return nil, fmt.Errorf("max flows per device %d: must be positive (0: the default, %d)", cfg.MaxFlowsPerDevice, DefaultMaxFlowsPerDevice)
	}
	if cfg.MaxFlowsPerDevice == 0 {
		cfg.MaxFlowsPerDevice = DefaultMaxFlowsPerDevice
	}
	if cfg.MaxPendingConns < 0 || cfg.MaxPendingPerAddr < 0 {
		return nil, fmt.Errorf("max pending connections %d, per address %d: must be positive (0: the defaults, %d and %d)",
			cfg.MaxPendingConns, cfg.MaxPendingPerAddr, DefaultMaxPendingConns, DefaultMaxPendingPerAddr)
	}
	if cfg.MaxPendingConns == 0 {
		cfg.MaxPendingConns = DefaultMaxPendingConns
	}
	if cfg.MaxPendingPerAddr == 0 {
		cfg.MaxPendingPerAddr = DefaultMaxPendingPerAddr
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ListenUDP == "" {
		cfg.ListenUDP = ":0"
	}
	st, err := LoadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	c := &Connector{cfg: cfg, log: cfg.Logger.With("connector", st.ID), sessions: map[*session]struct{}{}, bulkTarget: cfg.BulkQueueTarget,
		devFlows: newDeviceFlows(cfg.MaxFlowsPerDevice)}
	if c.bulkTarget == 0 {
		c.bulkTarget = bulkyield.DefaultTarget
	}
	c.ctlState.downSince = time.Now()
	c.state.Store(st)
	c.met = newMetrics()
	c.admit = newAdmission(cfg.MaxPendingConns, cfg.MaxPendingPerAddr, c.refusedPending)
	c.admit.register(c.met.reg)
	c.events = newEventQueue(st.ID)
	if pol, err := loadPolicy(cfg.StateDir); err != nil {
		c.log.Warn("ignoring stored policy", "err", err)
	} else if pol != nil {
		c.policy.Store(pol)
		c.met.policyRev.Set(float64(pol.rev))
		c.log.Info("loaded stored policy", "rev", pol.rev, "resources", len(pol.resources))
	}
	// The certificate validity covers the rotation interval plus the overlap.
	if c.certs, err = newCertStore("connector-"+st.ID, cfg.RotateInterval+cfg.CertOverlap+time.Hour, cfg.CertOverlap); err != nil {
		return nil, err
	}
	if c.ctl, err = newControlClient(c); err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", cfg.ListenUDP)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.ListenUDP, err)
	}
	if c.udp, err = net.ListenUDP("udp", ua); err != nil {
		return nil, fmt.Errorf("listen on UDP %s: %w", cfg.ListenUDP, err)
	}
	resetKey, err := loadResetKey(cfg.StateDir)
	if err != nil {
		c.udp.Close()
		return nil, err
	}
	c.tr = &quic.Transport{Conn: udpgro.Wrap(c.udp), StatelessResetKey: resetKey}
	c.admit.install(c.tr)
	if c.agent, err = c.newTraversalAgent(); err != nil {
		c.tr.Close()
		c.udp.Close()
		return nil, err
	}
	if p := c.policy.Load(); p != nil {
		c.setRelays(p.raw.Relays)
	}
	// Last: nothing after it can fail and leave its goroutine behind.
	if r, err := newReadiness(); err == nil {
		c.ready = r
		if cfg.parkAfter > 0 {
			r.parkAfter = cfg.parkAfter
		}
	} else if !errors.Is(err, errNoReadiness) {
		c.log.Warn("idle flows will hold a goroutine each", "err", err)
	}
	return c, nil
}

func loadResetKey(dir string) (*quic.StatelessResetKey, error) {
	var k quic.StatelessResetKey
	p := filepath.Join(dir, resetKeyFile)
	if b, err := os.ReadFile(p); err == nil && len(b) == len(k) {
		copy(k[:], b)
		return &k, nil
	}
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("generate QUIC reset key: %w", err)
	}
	if err := atomicfile.Write(p, k[:], 0o600); err != nil {
		return nil, fmt.Errorf("store QUIC reset key: %w", err)
	}
	return &k, nil
}

// ID is the connector's id assigned by the controller.
func (c *Connector) ID() string { return c.state.Load().ID }

// Name is the connector's name.
func (c *Connector) Name() string { return c.state.Load().Name }

// Transport is the quic-go transport on the connector's UDP socket. STUN and
// hole punching share the socket through its ReadNonQUICPacket and WriteTo.
func (c *Connector) Transport() *quic.Transport { return c.tr }

// LocalAddr is the address of the QUIC UDP socket.
func (c *Connector) LocalAddr() *net.UDPAddr { return c.udp.LocalAddr().(*net.UDPAddr) }

// CertDigests returns the digests of the certificates the connector serves,
// current first (what heartbeats report).
func (c *Connector) CertDigests() []string { return c.certs.digests() }

// Rotate makes a fresh QUIC key and certificate current now and reports it
// with an immediate heartbeat; the previous one keeps serving for the overlap.
func (c *Connector) Rotate(ctx context.Context) error {
	if err := c.certs.rotate(time.Now()); err != nil {
		return err
	}
	c.log.Info("rotated QUIC certificate", "sha256", c.certs.current())
	return c.ctl.heartbeat(ctx)
}

// AddAdvertisedAddr adds an address ("ip:port", server-reflexive or relayed)
// that heartbeats report next to the host addresses.
func (c *Connector) AddAdvertisedAddr(addr string) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		c.log.Warn("ignoring advertised address", "addr", addr, "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.extra {
		if a == addr {
			return
		}
	}
	c.extra = append(c.extra, addr)
}

// RemoveAdvertisedAddr removes an address added with AddAdvertisedAddr.
func (c *Connector) RemoveAdvertisedAddr(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range c.extra {
		if a == addr {
			c.extra = append(c.extra[:i], c.extra[i+1:]...)
			return
		}
	}
}

// AdvertisedAddrs returns the QUIC addresses heartbeats report: every
// non-loopback, non-link-local interface address with the QUIC port (or only
// the bound address when the socket is bound to one), plus added ones.
func (c *Connector) AdvertisedAddrs() []string {
	la := c.LocalAddr()
	port := la.Port
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	bound, _ := netip.AddrFromSlice(la.IP)
	bound = bound.Unmap()
	if bound.IsValid() && !bound.IsUnspecified() {
		add(netip.AddrPortFrom(bound, uint16(port)).String())
	} else if addrs, err := net.InterfaceAddrs(); err == nil {
		v4only := la.IP != nil && la.IP.To4() != nil && !la.IP.Equal(net.IPv6unspecified)
		var list []string
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr().Unmap()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || (v4only && !ip.Is4()) {
				continue
			}
			list = append(list, netip.AddrPortFrom(ip, uint16(port)).String())
		}
		sort.Strings(list)
		for _, s := range list {
			add(s)
		}
	}
	c.mu.Lock()
	extra := append([]string(nil), c.extra...)
	c.mu.Unlock()
	for _, s := range extra {
		add(s)
	}
	return out
}

// TLSConfig is the server TLS configuration every listener uses: TLS 1.3,
// ALPN wire.ALPN, the certificate chosen by server name, a required (self-
// signed Ed25519) device certificate, no session tickets.
func (c *Connector) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{wire.ALPN},
		GetCertificate:         c.certs.getCertificate,
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				c.met.handshakeFail.WithLabelValues("no client certificate").Inc()
				return errors.New("client sent no device certificate")
			}
			if _, err := pki.CertKeyThumbprint(cs.PeerCertificates[0]); err != nil {
				c.met.handshakeFail.WithLabelValues("bad client key").Inc()
				return fmt.Errorf("device certificate: %w", err)
			}
			return nil
		},
	}
}

// QUICConfig is the QUIC configuration every listener uses: many concurrent
// streams (one per flow, a little over the device flow limit), bounded
// flow-control windows, keepalives.
func (c *Connector) QUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           10 * time.Second,
		InitialPacketSize:              traversal.InitialPacketSize, // fits a 1280-byte path, also relayed
		MaxIdleTimeout:                 90 * time.Second,            // a suspended client's flows outlive a minute
		KeepAlivePeriod:                15 * time.Second,
		MaxIncomingStreams:             streamsPerConn(c.cfg.MaxFlowsPerDevice),
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         8 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     32 << 20,
	}
}

// Run serves until ctx ends: the QUIC listener on the UDP socket, heartbeats,
// the policy stream, certificate rotation, credential renewal, flow events and
// the metrics endpoint. It closes the connector when it returns.
func (c *Connector) Run(ctx context.Context) error {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ln, err := c.tr.Listen(c.TLSConfig(), c.QUICConfig())
	if err != nil {
		return fmt.Errorf("listen QUIC: %w", err)
	}
	defer ln.Close()
	c.log.Info("connector running", "quic", c.LocalAddr().String(), "cert_sha256", c.certs.current())
	for _, a := range hostAdvice() {
		c.log.Warn("host setting limits short connections", "advice", a)
	}

	var wg sync.WaitGroup
	errc := make(chan error, 1)
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				select {
				case errc <- fmt.Errorf("%s: %w", name, err):
				default:
				}
				cancel()
			}
		}()
	}
	if c.cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", c.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener %s: %w", c.cfg.MetricsAddr, err)
		}
		ma := mln.Addr().String()
		c.metricsAddr.Store(&ma)
		srv := &http.Server{Handler: c.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		start("metrics", func(ctx context.Context) error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	start("quic", func(ctx context.Context) error { return c.ServeListener(ctx, ln) })
	start("heartbeat", c.ctl.heartbeatLoop)
	start("policy", c.ctl.policyLoop)
	start("events", c.ctl.eventsLoop)
	start("renew", c.ctl.renewLoop)
	start("rotate", c.rotateLoop)
	start("traversal", c.runTraversal)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

func (c *Connector) rotateLoop(ctx context.Context) error {
	rot := time.NewTicker(c.cfg.RotateInterval)
	defer rot.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rot.C:
			if err := c.Rotate(ctx); err != nil {
				c.log.Warn("certificate rotation", "err", err)
			}
		case now := <-prune.C:
			c.certs.prune(now)
		}
	}
}

// Close closes every connection and the UDP socket. Run calls it on return.
func (c *Connector) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		sessions := c.sessionsLocked()
		c.mu.Unlock()
		for _, s := range sessions {
			s.close(codeShutdown, "connector shutting down")
		}
		c.wg.Wait()
		if c.ready != nil {
			c.ready.close()
		}
		c.tr.Close()
		c.udp.Close()
		c.ctl.close()
	})
	return nil
}

// ServeListener accepts client connections from ln until ctx ends or ln is
// closed. It is the transport seam: any quic.Listener created with TLSConfig
// and QUICConfig (on a relayed or hole-punched path) can be served.
func (c *Connector) ServeListener(ctx context.Context, ln *quic.Listener) error {
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept QUIC connection: %w", err)
		}
		s := newSession(c, conn)
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			conn.CloseWithError(codeShutdown, "connector shutting down")
			return ErrClosed
		}
		c.sessions[s] = struct{}{}
		c.wg.Add(1)
		c.mu.Unlock()
		c.met.connections.Inc()
		go func() {
			defer c.wg.Done()
			s.serve(ctx)
			c.mu.Lock()
			delete(c.sessions, s)
			c.mu.Unlock()
			c.met.connections.Dec()
		}()
	}
}

// applyPolicy installs a new snapshot, persists it and closes what it no
// longer allows.
func (c *Connector) applyPolicy(p controlapi.ConnectorPolicy) error {
	cp, err := compilePolicy(p)
	if err != nil {
		return err
	}
	if p.ConnectorID != "" && p.ConnectorID != c.ID() {
		return fmt.Errorf("policy is for connector %q, not %q", p.ConnectorID, c.ID())
	}
	c.policy.Store(cp)
	c.met.policyRev.Set(float64(cp.rev))
	c.enforce(cp)
	c.setRelays(p.Relays)
	if err := savePolicy(c.cfg.StateDir, p); err != nil {
		c.log.Warn("policy applied but not stored", "err", err)
	}
	c.log.Info("policy applied", "rev", cp.rev, "resources", len(cp.resources))
	return nil
}

// enforce closes connections of revoked devices and flows the policy no longer allows.
func (c *Connector) enforce(p *compiledPolicy) {
	c.eachSession(func(s *session) { s.enforce(p) })
}

// sessionsLocked is a snapshot of the open sessions; c.mu is held.
func (c *Connector) sessionsLocked() []*session {
	sessions := make([]*session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	return sessions
}

// eachSession runs f on each open session, outside c.mu.
func (c *Connector) eachSession(f func(*session)) {
	c.mu.Lock()
	sessions := c.sessionsLocked()
	c.mu.Unlock()
	for _, s := range sessions {
		f(s)
	}
}

// MetricsListenAddr is the address the metrics endpoint listens on, once Run
// has started it ("" otherwise).
func (c *Connector) MetricsListenAddr() string {
	if p := c.metricsAddr.Load(); p != nil {
		return *p
	}
	return ""
}

func (c *Connector) now() time.Time { return c.cfg.Now() }

// Ready reports whether the connector can serve: it has a policy.
func (c *Connector) Ready() bool { return c.policy.Load() != nil }
