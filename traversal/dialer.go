package traversal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/udpgro"
)

// Path kinds and transports reported in PathInfo.
const (
	PathDirect   = "direct"
	PathRelay    = "relay"
	TransportUDP = "udp"
	TransportTLS = "tls"
)

// directGrace is how long a dial that found a relayed pair first waits for a
// direct one before it starts on the relay (and migrates later).
const directGrace = 300 * time.Millisecond

// defaultRankTimeout bounds the STUN probe that orders relays by latency.
const defaultRankTimeout = 300 * time.Millisecond

// rankGrace is how much longer than the first relay to answer the others
// may take and still be ranked by their round trip: a relay that much
// slower is not the nearest, and a dead one no longer holds up every dial
// for the whole RankTimeout.
const rankGrace = 50 * time.Millisecond

// PathInfo describes the path a connection uses.
type PathInfo struct {
	Path       string `json:"path"`      // "direct" or "relay"
	Transport  string `json:"transport"` // "udp" or "tls" (to the relay)
	RemoteAddr string `json:"remote_addr"`
	Relay      string `json:"relay,omitempty"` // relay name when relayed
	// RTT is the connection's smoothed round-trip time (filled by Path).
	RTT time.Duration `json:"rtt,omitempty"`
}

// DialerConfig configures the client side.
type DialerConfig struct {
	// Relays returns the relays of the current ClientPolicy.
	Relays func() []controlapi.RelayInfo
	// TURNCredentials fetches short-lived relay credentials (PathTURNCredentials).
	TURNCredentials func(ctx context.Context) (controlapi.TURNCredentials, error)
	// ConnectionToken returns a Connection Token for the connector; the relay
	// checks it (and its device binding) before it forwards signaling.
	ConnectionToken func(ctx context.Context, connectorID string) (string, error)
	// ListenAddr is the plain UDP socket of direct paths (default ":0").
	ListenAddr string
	// TLSFallbackDelay is how long a TURN allocation over UDP may take before
	// one over TLS is tried in parallel (default 1 s).
	TLSFallbackDelay time.Duration
	// RankTimeout bounds the STUN probe that orders relays by latency
	// (default 300 ms); once one relay has answered, the others have
	// rankGrace more than its round trip.
	RankTimeout time.Duration
	// ExcludePrefixes are address ranges never offered as host candidates,
	// in addition to DefaultExcludedPrefixes (the client's synthetic
	// ranges when it is configured with other ones).
	ExcludePrefixes []netip.Prefix
	// NoDirect and NoRelay switch a path kind off (diagnostics, tests).
	NoDirect, NoRelay bool
	// OnPathChange is called after a connection moves to another path.
	OnPathChange func(connectorID string, p PathInfo)
	Logger       *slog.Logger
}

// Dialer opens QUIC connections to connectors over the best available path.
// It owns one plain UDP socket (and quic.Transport) shared by every direct
// path; relayed connections each have their own TURN allocation.
type Dialer struct {
	cfg    DialerConfig
	log    *slog.Logger
	udp    *net.UDPConn
	tr     *quic.Transport
	m      *mux
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[*quic.Conn]*dialState
	failures map[string]failure // connector id -> last failed dial (Diagnose)

	releaseAfter time.Duration
}

type dialState struct {
	connector string
	mu        sync.Mutex
	path      PathInfo
	cur       *leg   // the leg the relayed path (and signaling) uses now
	legs      []*leg // every leg opened for this connection, closed with it
	plain     bool   // the connection runs on the dialer's plain socket
}

func (st *dialState) setPlain(v bool) {
	st.mu.Lock()
	st.plain = v
	st.mu.Unlock()
}

func (st *dialState) onPlain() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.plain
}

func (st *dialState) setPath(p PathInfo) {
	st.mu.Lock()
	st.path = p
	st.mu.Unlock()
}

func (st *dialState) getPath() PathInfo {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.path
}

func (st *dialState) current() *leg {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.cur
}

func (st *dialState) closeLegs() {
	st.mu.Lock()
	legs := st.legs
	st.legs, st.cur = nil, nil
	st.mu.Unlock()
	for _, l := range legs {
		l.close()
	}
}

// NewDialer opens the plain UDP socket and starts reading it.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if cfg.Relays == nil || cfg.TURNCredentials == nil || cfg.ConnectionToken == nil {
		return nil, fmt.Errorf("%w: dialer needs Relays, TURNCredentials and ConnectionToken", ErrBadConfig)
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = ":0"
	}
	if cfg.RankTimeout <= 0 {
		cfg.RankTimeout = defaultRankTimeout
	}
	if cfg.TLSFallbackDelay <= 0 {
		cfg.TLSFallbackDelay = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ua, err := net.ResolveUDPAddr("udp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %v", ErrBadConfig, cfg.ListenAddr, err)
	}
	disableECN()
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("open UDP socket %s: %w", cfg.ListenAddr, err)
	}
	d := &Dialer{cfg: cfg, log: cfg.Logger.With("part", "traversal"), udp: udp, tr: &quic.Transport{Conn: udpgro.Wrap(udp)}, conns: map[*quic.Conn]*dialState{}, releaseAfter: releaseAfter}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.m = newMux(d.tr, "udp", d.log)
	d.m.primer = lowTTLPrimer(udp)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.m.run(d.ctx); err != nil {
			d.log.Debug("direct socket reader ended", "err", err)
		}
	}()
	return d, nil
}

// ecnEnv is quic-go's switch for ECN.
const ecnEnv = "QUIC_GO_DISABLE_ECN"

// disableECN turns ECN off for the QUIC transports of this process (unless
// the environment already decides). quic-go v0.65 keeps a connection's ECN
// marking when it migrates from the plain UDP socket (ECN-capable) onto a
// relayed transport (a wrapped PacketConn without ECN) and then panics
// ("cannot use ECN with a basicConn"); the dialer moves direct connections
// onto relays when a repair needs it. GSO is unaffected.
func disableECN() {
	if _, set := os.LookupEnv(ecnEnv); !set {
		_ = os.Setenv(ecnEnv, "true")
	}
}

// Transport is the dialer's plain QUIC transport (direct paths).
func (d *Dialer) Transport() *quic.Transport { return d.tr }

// LocalAddr is the plain socket's address.
func (d *Dialer) LocalAddr() net.Addr { return d.udp.LocalAddr() }

// Path returns the current path of a connection made by Dial, with its
// smoothed round-trip time.
func (d *Dialer) Path(c *quic.Conn) (PathInfo, bool) {
	d.mu.Lock()
	st := d.conns[c]
	d.mu.Unlock()
	if st == nil {
		return PathInfo{}, false
	}
	p := st.getPath()
	p.RTT = c.ConnectionStats().SmoothedRTT
	return p, true
}

// Close closes every connection's relay resources and the socket.
func (d *Dialer) Close() error {
	d.cancel()
	d.mu.Lock()
	for c := range d.conns {
		c.CloseWithError(0, "dialer closed")
	}
	d.mu.Unlock()
	err := d.tr.Close()
	d.wg.Wait()
	return err
}

// InitialPacketSize is the QUIC packet size (UDP payload) both ends start
// with before path MTU discovery raises it: 1200 bytes, the least QUIC
// allows, so that the handshake fits a 1280-byte path (IPv6's minimum, and
// IPv4 behind tunnels, PPPoE over tunnels and some mobile networks) also
// behind the 4 bytes of a TURN channel header. quic-go's default, 1280, does
// not: such a path dropped every handshake packet and the client fell back
// to the relay after seconds (TestNATMatrix, cell mtu-1280).
const InitialPacketSize = 1200

// Dial connects to connector c: it starts on the first path that validates
// (direct or relayed) and later migrates to a direct path when one appears.
// tlsConf must pin the connector (Connection Token digest) and carry the
// device certificate; quicConf is used as given (a zero KeepAlivePeriod is
// set to 10 s so that NAT mappings stay open).
func (d *Dialer) Dial(ctx context.Context, c controlapi.ConnectorInfo, tlsConf *tls.Config, quicConf *quic.Config) (*quic.Conn, PathInfo, error) {
	qc := &quic.Config{}
	if quicConf != nil {
		qc = quicConf.Clone()
	}
	if qc.KeepAlivePeriod == 0 {
		qc.KeepAlivePeriod = 10 * time.Second
	}
	if qc.InitialPacketSize == 0 {
		qc.InitialPacketSize = InitialPacketSize
	}
	relays := d.relays(ctx)
	if len(relays) == 0 {
		return d.dialAddrs(ctx, c, tlsConf, qc)
	}
	cert, err := deviceCert(tlsConf)
	if err != nil {
		return nil, PathInfo{}, err
	}
	token, err := d.cfg.ConnectionToken(ctx, c.ID)
	if err != nil {
		return nil, PathInfo{}, fmt.Errorf("connection token for %s: %w", c.ID, err)
	}
	relays = d.rankRelays(ctx, relays)
	var errs []error
	for _, r := range relays {
		conn, p, err := d.dialVia(ctx, c, r, cert, tlsConf, qc, token)
		if err == nil {
			return conn, p, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, PathInfo{}, fmt.Errorf("dial connector %s: %w", c.ID, errors.Join(errs...))
}

func deviceCert(tlsConf *tls.Config) (*tls.Certificate, error) {
	if tlsConf == nil {
		return nil, ErrNoCertificate
	}
	if len(tlsConf.Certificates) > 0 {
		return &tlsConf.Certificates[0], nil
	}
	if tlsConf.GetClientCertificate != nil {
		c, err := tlsConf.GetClientCertificate(&tls.CertificateRequestInfo{})
		if err == nil && c != nil && len(c.Certificate) > 0 {
			return c, nil
		}
	}
	return nil, ErrNoCertificate
}

// dialAddrs dials the connector's advertised addresses directly (no relay
// configured): the first handshake that completes wins.
func (d *Dialer) dialAddrs(ctx context.Context, c controlapi.ConnectorInfo, tlsConf *tls.Config, qc *quic.Config) (*quic.Conn, PathInfo, error) {
	if len(c.Addrs) == 0 {
		return nil, PathInfo{}, fmt.Errorf("dial connector %s: %w: no relay and no advertised address", c.ID, ErrNoPath)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type res struct {
		conn *quic.Conn
		addr string
		err  error
	}
	ch := make(chan res, len(c.Addrs))
	for _, a := range c.Addrs {
		go func(a string) {
			ua, err := net.ResolveUDPAddr("udp", defaultNAT64.translate(ctx, a, true))
			if err != nil {
				ch <- res{err: err}
				return
			}
			conn, err := d.tr.Dial(ctx, ua, tlsConf, qc)
			ch <- res{conn, a, err}
		}(a)
	}
	var errs []error
	var won *quic.Conn
	var p PathInfo
	for range c.Addrs {
		r := <-ch
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case won == nil:
			won, p = r.conn, PathInfo{Path: PathDirect, Transport: TransportUDP, RemoteAddr: r.addr}
			cancel()
		default:
			r.conn.CloseWithError(0, "duplicate")
		}
	}
	if won == nil {
		return nil, PathInfo{}, fmt.Errorf("dial connector %s: %w", c.ID, errors.Join(errs...))
	}
	d.track(won, &dialState{connector: c.ID, path: p, plain: true})
	return won, p, nil
}

func (d *Dialer) track(conn *quic.Conn, st *dialState) {
	d.mu.Lock()
	d.conns[conn] = st
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		<-conn.Context().Done()
		d.mu.Lock()
		delete(d.conns, conn)
		d.mu.Unlock()
		st.closeLegs()
	}()
}

// dialVia runs signaling and checks through relay r and dials QUIC on the
// first pair that validates.
func (d *Dialer) dialVia(ctx context.Context, c controlapi.ConnectorInfo, r controlapi.RelayInfo, cert *tls.Certificate, tlsConf *tls.Config, qc *quic.Config, token string) (_ *quic.Conn, _ PathInfo, err error) {
	l, err := d.openLeg(ctx, c, r, cert, token)
	if err != nil {
		d.noteFailure(c.ID, r.Name, nil, err)
		return nil, PathInfo{}, err
	}
	ok := false
	defer func() {
		if !ok {
			if err != nil {
				d.noteFailure(c.ID, r.Name, l.s.pairs(), err)
			}
			l.close()
		} else {
			d.clearFailure(c.ID)
		}
	}()
	for {
		var ev pathEvent
		select {
		case <-ctx.Done():
			return nil, PathInfo{}, fmt.Errorf("dial connector %s via relay %s: %w", c.ID, r.Name, context.Cause(ctx))
		case err := <-l.sigErr:
			return nil, PathInfo{}, fmt.Errorf("dial connector %s via relay %s: %w", c.ID, r.Name, err)
		case ev = <-l.s.events:
		}
		if !l.relayedEvent(ev) && d.cfg.NoDirect {
			continue
		}
		if l.relayedEvent(ev) && !d.cfg.NoDirect {
			// A relayed pair validated first: give a direct pair a moment
			// to validate too before settling on the relay.
			select {
			case dev := <-l.s.events:
				if !l.relayedEvent(dev) {
					ev = dev
				}
			case <-time.After(directGrace):
			case <-ctx.Done():
			}
		}
		p, tr := l.pathFor(ev)
		if tr == nil {
			continue
		}
		d.log.Debug("dialing QUIC", "connector", c.ID, "path", p.Path, "transport", p.Transport, "remote", p.RemoteAddr)
		conn, err := tr.Dial(ctx, ev.addr, tlsConf, qc)
		if err != nil {
			if ctx.Err() != nil {
				return nil, PathInfo{}, fmt.Errorf("dial connector %s: %w", c.ID, err)
			}
			d.log.Info("QUIC dial failed on validated path", "connector", c.ID, "remote", p.RemoteAddr, "err", err)
			continue
		}
		ok = true
		if p.Path == PathRelay {
			l.markCarried()
		}
		st := &dialState{connector: c.ID, path: p, cur: l, legs: []*leg{l}, plain: tr == d.tr}
		d.track(conn, st)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.maintain(conn, st, c, cert)
		}()
		d.log.Info("connected", "connector", c.ID, "path", p.Path, "transport", p.Transport, "remote", p.RemoteAddr)
		return conn, p, nil
	}
}

// rankRelays orders relays by the round-trip time of one STUN binding from
// the plain socket (answered within RankTimeout, and within rankGrace of the
// first answer), the others after them in their listed order: signaling and
// relaying go through the nearest relay.
func (d *Dialer) rankRelays(ctx context.Context, relays []controlapi.RelayInfo) []controlapi.RelayInfo {
	if len(relays) < 2 {
		return relays
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.RankTimeout)
	defer cancel()
	var graceMu sync.Mutex
	var grace *time.Timer
	defer func() {
		graceMu.Lock()
		if grace != nil {
			grace.Stop()
		}
		graceMu.Unlock()
	}()
	rtts := make([]time.Duration, len(relays))
	var wg sync.WaitGroup
	for i, r := range relays {
		rtts[i] = time.Duration(1<<63 - 1)
		server, err := net.ResolveUDPAddr("udp", r.UDPAddr)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := stunBinding()
			if err != nil {
				return
			}
			start := time.Now()
			if _, err := d.m.transact(ctx, req, server, d.cfg.RankTimeout); err == nil {
				rtts[i] = time.Since(start)
				graceMu.Lock()
				if grace == nil {
					grace = time.AfterFunc(rtts[i]+rankGrace, cancel)
				}
				graceMu.Unlock()
			}
		}()
	}
	wg.Wait()
	idx := make([]int, len(relays))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return rtts[idx[a]] < rtts[idx[b]] })
	out := make([]controlapi.RelayInfo, len(relays))
	for i, j := range idx {
		out[i] = relays[j]
	}
	return out
}
