package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/bulkyield"
	"postern.dev/postern/pki"
	"postern.dev/postern/wire"
)

// Connection tuning.
const (
	keepAlivePeriod   = 400 * time.Millisecond
	suspectAfter      = 1200 * time.Millisecond // no packet for this long: new flows prefer other connectors
	deadAfter         = 20 * time.Second        // no packet for this long: the connection is closed (traversal's repairs, re-punch then relay, get this long to save running flows)
	dialTimeout       = 5 * time.Second
	dialBackoff       = 3 * time.Second // after a failed dial, prefer other connectors for this long
	tokenFetchTimeout = 3 * time.Second // a fresh dial waits this long for the controller before reusing a token
	tokenReuseMargin  = 10 * time.Second
	statusTimeout     = 15 * time.Second
	refreshMargin     = 2 * time.Minute
	refreshRetry      = 10 * time.Second
	// quicIdleTimeout outlasts a suspended laptop (a minute with the lid
	// closed): the connector's keepalives hold the NAT mapping meanwhile, and
	// on resume the running flows go on (the connector's own is the same).
	quicIdleTimeout = 90 * time.Second
	// suspendGap: monitor ticks this far apart mean the process (or the
	// machine) was suspended, not that the connector went silent.
	suspendGap       = 2 * time.Second
	maxStreamWindow  = 16 << 20
	maxConnWindow    = 64 << 20
	quicErrShutdown  = 0
	quicErrDead      = 1
	defaultRTTGuess  = 50 * time.Millisecond
	loadPenaltyFlows = 50.0 // this many active flows double a connector's score
)

// connEntry is the state of one connector: its QUIC connection (when up)
// and counters.
type connEntry struct {
	id string

	mu       sync.Mutex
	info     controlapi.ConnectorInfo
	conn     *quic.Conn
	path     PathInfo
	digest   string
	tokenExp time.Time
	dialing  chan struct{} // closed when the dial in progress ends
	dialErr  error
	failedAt time.Time
	draining bool
	suspect  atomic.Bool // nothing received for suspectAfter

	// The last verified Connection Token, reused for a fresh dial while it
	// is valid and the controller cannot be reached.
	lastToken  string
	lastClaims *ctoken.Claims

	// Background redial (reconnect.go): since is when the entry entered
	// its current state (connected or reconnecting), lastErr the last dial
	// or connection error.
	reconnecting bool
	removed      bool // no longer in the policy
	since        time.Time
	lastErr      string

	// Extra connections to the same connector (spread.go).
	extras        []*extraConn
	extraDialing  int
	extraDone     chan struct{} // closed when the extra dials in progress end
	extraFailedAt time.Time

	// interactive sees the short messages of flows that are not bulk;
	// bulk flows yield to them (spread.go).
	interactive bulkyield.Marker

	active    atomic.Int64
	total     atomic.Int64
	bytesUp   atomic.Int64
	bytesDown atomic.Int64
}

// pool holds one connEntry per connector and dials on demand.
type pool struct {
	dialer   Dialer
	tokens   TokenSource
	log      *slog.Logger
	onChange func()

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.RWMutex // entries (read-locked on the flow-open path), kick
	entries map[string]*connEntry
	kick    chan struct{} // closed and replaced on a network change

	// loadMu guards the per-connection flow counts; it is taken last
	// (never while taking another lock).
	loadMu  sync.Mutex
	streams map[*quic.Conn]int // open flows per connection
	bulk    map[*quic.Conn]int // open bulk flows per connection
	// maxConns is the most QUIC connections kept per connector and
	// spreadAt the flows that fill one (spread.go).
	maxConns int
	spreadAt int
	// bulkTarget is the queueing delay bulk flows leave while interactive
	// flows are active (spread.go); 0: they never yield.
	bulkTarget time.Duration

	refused refusalLog // rate-limited WARN for flows refused for lack of a path
}

func newPool(d Dialer, ts TokenSource, log *slog.Logger, onChange func()) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{dialer: d, tokens: ts, log: log, onChange: onChange, ctx: ctx, cancel: cancel, entries: map[string]*connEntry{},
		streams: map[*quic.Conn]int{}, bulk: map[*quic.Conn]int{}, maxConns: defaultConnsPerConnector(), spreadAt: defaultSpreadAt, bulkTarget: bulkyield.DefaultTarget,
		kick: make(chan struct{})}
}

// close closes every connection and waits for the background goroutines.
func (p *pool) close() {
	p.mu.Lock()
	p.cancel() // under mu: startReconnect sees it before adding to wg
	p.mu.Unlock()
	p.mu.Lock()
	for _, e := range p.entries {
		e.mu.Lock()
		if e.conn != nil {
			_ = e.conn.CloseWithError(quicErrShutdown, "client shutting down")
		}
		for _, x := range e.extras {
			_ = x.conn.CloseWithError(quicErrShutdown, "client shutting down")
		}
		e.mu.Unlock()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *pool) entry(c controlapi.ConnectorInfo) *connEntry {
	p.mu.RLock()
	e, ok := p.entries[c.ID]
	p.mu.RUnlock()
	if ok {
		e.mu.Lock()
		e.info = c
		e.mu.Unlock()
		return e
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok = p.entries[c.ID]
	if !ok {
		e = &connEntry{id: c.ID}
		p.entries[c.ID] = e
	}
	e.mu.Lock()
	e.info = c
	e.mu.Unlock()
	return e
}

// retain drops connectors that are no longer in the policy and updates the
// others' info; a connector that came back online is redialed at once.
func (p *pool) retain(cs []controlapi.ConnectorInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make(map[string]controlapi.ConnectorInfo, len(cs))
	for _, c := range cs {
		ids[c.ID] = c
	}
	back := false
	for id, e := range p.entries {
		if c, ok := ids[id]; ok {
			e.mu.Lock()
			back = back || (c.Online && !e.info.Online && e.reconnecting)
			e.info = c
			e.mu.Unlock()
			continue
		}
		e.mu.Lock()
		if e.conn != nil {
			_ = e.conn.CloseWithError(quicErrShutdown, "connector removed from policy")
			e.conn = nil
		}
		for _, x := range e.extras {
			_ = x.conn.CloseWithError(quicErrShutdown, "connector removed from policy")
		}
		e.extras = nil
		e.removed = true
		e.mu.Unlock()
		if e.active.Load() == 0 {
			delete(p.entries, id)
		}
	}
	if back {
		close(p.kick)
		p.kick = make(chan struct{})
	}
}

// candidates orders the online connectors by expected quality: connected and
// healthy first, then by smoothed RTT weighted by load; connectors whose last
// dial failed recently go last.
func (p *pool) candidates(cs []controlapi.ConnectorInfo) []*connEntry {
	type scored struct {
		e     *connEntry
		score float64
		bad   bool
	}
	var list []scored
	now := time.Now()
	for _, c := range cs {
		if !c.Online {
			continue
		}
		e := p.entry(c)
		e.mu.Lock()
		rtt := defaultRTTGuess
		if e.conn != nil && !e.draining {
			if s := e.conn.ConnectionStats().SmoothedRTT; s > 0 {
				rtt = s
			}
		} else {
			rtt += 20 * time.Millisecond // a new handshake costs about one more round trip
		}
		bad := (!e.failedAt.IsZero() && now.Sub(e.failedAt) < dialBackoff) || (e.conn != nil && e.suspect.Load())
		load := float64(e.active.Load()) + float64(c.Load.ActiveFlows)/4
		e.mu.Unlock()
		list = append(list, scored{e: e, score: float64(rtt) * (1 + load/loadPenaltyFlows), bad: bad})
	}
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].bad != list[j].bad {
			return !list[i].bad
		}
		return list[i].score < list[j].score
	})
	out := make([]*connEntry, len(list))
	for i, s := range list {
		out[i] = s.e
	}
	return out
}

// track counts a flow opened on conn; untrack releases it.
func (p *pool) track(conn *quic.Conn) {
	p.loadMu.Lock()
	p.streams[conn]++
	p.loadMu.Unlock()
}

func (p *pool) untrack(conn *quic.Conn) {
	p.loadMu.Lock()
	if p.streams[conn]--; p.streams[conn] <= 0 {
		delete(p.streams, conn)
	}
	p.loadMu.Unlock()
}

func (p *pool) openStreams(conn *quic.Conn) int {
	p.loadMu.Lock()
	defer p.loadMu.Unlock()
	return p.streams[conn]
}

// get returns a live connection to e, dialing it if needed. Concurrent
// callers share one dial. A suspect connection (silent for suspectAfter)
// is replaced by a fresh dial through the same dialer, which picks a relay
// or TLS when UDP no longer gets through; the suspect one keeps serving its
// running flows until it dies or they end. While a replacement dial failed
// recently, the suspect connection is returned as it is.
func (p *pool) get(ctx context.Context, e *connEntry) (*quic.Conn, error) {
	for {
		e.mu.Lock()
		if e.conn != nil && !e.draining && (!e.suspect.Load() || (e.dialing == nil && !e.failedAt.IsZero() && time.Since(e.failedAt) < dialBackoff)) {
			c := e.conn
			e.mu.Unlock()
			return c, nil
		}
		if ch := e.dialing; ch != nil {
			e.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			e.mu.Lock()
			c, err := e.conn, e.dialErr
			e.mu.Unlock()
			if err != nil {
				return nil, err
			}
			if c != nil {
				return c, nil
			}
			continue
		}
		ch := make(chan struct{})
		e.dialing = ch
		info := e.info
		replacing := e.conn != nil && !e.draining
		e.mu.Unlock()
		if replacing {
			p.log.Warn("connection to connector silent; dialing a fresh one for new flows", "connector", info.Name)
		}

		conn, path, digest, exp, ctrl, err := p.dial(ctx, e, info, false)
		e.mu.Lock()
		e.dialing = nil
		e.dialErr = err
		if err != nil {
			e.failedAt = time.Now()
			e.lastErr = err.Error()
		} else {
			e.failedAt = time.Time{}
			e.since = time.Now()
			// A draining connection (certificate rotated) is not closed
			// here: it serves its running flows, and monitor closes it
			// when the last one ends (make-before-break).
			e.conn, e.path, e.digest, e.tokenExp, e.draining = conn, path, digest, exp, false
			e.suspect.Store(false)
		}
		close(ch)
		e.mu.Unlock()
		if err != nil {
			if !replacing {
				// The next flow should find the connector ready: keep
				// dialing in the background.
				p.startReconnect(e, err)
			}
			p.changed()
			return nil, err
		}
		p.wg.Add(2)
		go p.monitor(e, conn)
		go p.refresh(e, conn, ctrl, digest, exp)
		p.growExtra(e) // the spare: a clean connection for interactive flows
		p.changed()
		return conn, nil
	}
}

func (p *pool) changed() {
	if p.onChange != nil {
		p.onChange()
	}
}

func quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           dialTimeout,
		MaxIdleTimeout:                 quicIdleTimeout,
		KeepAlivePeriod:                keepAlivePeriod,
		InitialStreamReceiveWindow:     1 << 20,
		MaxStreamReceiveWindow:         maxStreamWindow,
		InitialConnectionReceiveWindow: 4 << 20,
		MaxConnectionReceiveWindow:     maxConnWindow,
		MaxIncomingStreams:             -1, // the connector never opens streams
		MaxIncomingUniStreams:          -1,
	}
}

// dial fetches a token, opens the pinned QUIC connection and authenticates
// the control stream. An extra connection (spread.go) presents the token
// the entry holds when it is valid for a while yet, instead of asking the
// controller again.
func (p *pool) dial(ctx context.Context, e *connEntry, info controlapi.ConnectorInfo, extra bool) (*quic.Conn, PathInfo, string, time.Time, *quic.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout+5*time.Second)
	defer cancel()
	token, claims, ok := "", (*ctoken.Claims)(nil), false
	if extra {
		token, claims, ok = p.heldToken(e, "", time.Now())
	}
	var err error
	if !ok {
		token, claims, err = p.token(ctx, e, info)
	}
	if err != nil {
		return nil, PathInfo{}, "", time.Time{}, nil, err
	}
	digest := claims.ConnectorCertSHA256
	tlsConf := pki.PinnedPeerConfig(func() []string { return []string{digest} }, wire.ServerName(digest), []string{wire.ALPN})
	tlsConf.Certificates = []tls.Certificate{p.tokens.DeviceCert()}
	dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
	conn, path, err := p.dialer.Dial(dctx, info, tlsConf, quicConfig())
	dcancel()
	if err != nil {
		return nil, PathInfo{}, "", time.Time{}, nil, fmt.Errorf("connect to connector %s: %w%s", info.Name, err, refusedHint(err))
	}
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		_ = conn.CloseWithError(quicErrShutdown, "control stream")
		return nil, PathInfo{}, "", time.Time{}, nil, fmt.Errorf("connector %s: open control stream: %w", info.Name, err)
	}
	if err := sendToken(ctrl, token); err != nil {
		_ = conn.CloseWithError(quicErrShutdown, "token refused")
		return nil, PathInfo{}, "", time.Time{}, nil, fmt.Errorf("connector %s: %w", info.Name, err)
	}
	if extra {
		p.log.Debug("extra connection to connector", "connector", info.Name, "path", path.Path, "remote", path.RemoteAddr)
	} else {
		p.log.Info("connected to connector", "connector", info.Name, "path", path.Path, "remote", path.RemoteAddr)
	}
	return conn, path, digest, claims.ExpiresAt.Time, ctrl, nil
}

// sendToken writes a token frame on the control stream and waits for OK.
func sendToken(ctrl *quic.Stream, token string) error {
	_ = ctrl.SetDeadline(time.Now().Add(10 * time.Second))
	defer ctrl.SetDeadline(time.Time{})
	if err := wire.WriteFrame(ctrl, wire.KindToken, []byte(token)); err != nil {
		return fmt.Errorf("send connection token: %w", err)
	}
	st, msg, err := wire.ReadStatus(ctrl)
	if err != nil {
		return fmt.Errorf("read token status: %w", err)
	}
	if st != wire.StatusOK {
		return fmt.Errorf("%w: %s: %s", ErrConnectorRejected, st, msg)
	}
	return nil
}

// monitor watches the connection: keepalives make the peer answer every
// keepAlivePeriod, so silence for suspectAfter marks it suspect (new flows
// prefer other connectors; running flows stay), and silence for deadAfter
// closes it. A CPU-starved or briefly stalled peer recovers without losing
// its flows.
func (p *pool) monitor(e *connEntry, conn *quic.Conn) {
	defer p.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last := conn.ConnectionStats().PacketsReceived
	lastChange := time.Now()
	lastTick := lastChange
	for {
		select {
		case <-p.ctx.Done():
			// close() closes current connections; replaced ones end here.
			_ = conn.CloseWithError(quicErrShutdown, "client shutting down")
			return
		case <-conn.Context().Done():
			p.drop(e, conn, context.Cause(conn.Context()))
			return
		case now := <-t.C:
			open := p.openStreams(conn)
			e.mu.Lock()
			current := e.conn == conn
			xi, x := e.extraLocked(conn)
			retire := x != nil && e.retireExtraLocked(xi, x, open, now)
			e.mu.Unlock()
			if retire {
				_ = conn.CloseWithError(quicErrShutdown, "not needed")
				p.changed()
				return
			}
			if !current && x == nil && open == 0 {
				// Replaced while suspect and its last flow has ended.
				_ = conn.CloseWithError(quicErrShutdown, "replaced")
				return
			}
			if gap := now.Sub(lastTick); gap > suspendGap {
				// Suspended (SIGSTOP, a closed lid): the silence is ours,
				// not the connector's. Give it a fresh deadline to answer.
				p.log.Info("resumed after a pause; waiting for the connector again", "connector", e.info.Name, "paused", gap.Round(time.Second))
				lastChange = now
			}
			lastTick = now
			n := conn.ConnectionStats().PacketsReceived
			if n != last {
				last, lastChange = n, now
				if current && e.suspect.CompareAndSwap(true, false) {
					p.log.Info("connector answers again", "connector", e.info.Name)
					p.changed()
				}
				if x != nil {
					x.suspect.Store(false)
				}
				continue
			}
			silent := now.Sub(lastChange)
			if silent > deadAfter {
				err := fmt.Errorf("no answer from connector for %v", silent.Round(time.Second))
				_ = conn.CloseWithError(quicErrDead, err.Error())
				p.drop(e, conn, err)
				return
			}
			if x != nil && silent > suspectAfter {
				x.suspect.Store(true) // new flows go to the other connections
			}
			if current && silent > suspectAfter && e.suspect.CompareAndSwap(false, true) {
				p.log.Warn("connector silent; new flows prefer other connectors", "connector", e.info.Name, "silent", silent)
				p.changed()
			}
		}
	}
}

func (p *pool) drop(e *connEntry, conn *quic.Conn, cause error) {
	e.mu.Lock()
	if i, x := e.extraLocked(conn); x != nil {
		e.removeExtraLocked(i)
		spare := len(e.extras) == 0
		e.mu.Unlock()
		p.log.Debug("extra connection to connector lost", "connector", e.info.Name, "err", cause)
		if spare {
			p.growExtra(e)
		}
		p.changed()
		return
	}
	lost := e.conn == conn
	if lost {
		e.conn = nil
		if p.promoteLocked(e) {
			// Another connection to the connector is live: new flows go
			// there at once, and a new spare is dialed behind it.
			p.log.Info("connection to connector lost; its other connection takes over", "connector", e.info.Name, "err", cause)
			e.mu.Unlock()
			p.growExtra(e)
			p.changed()
			return
		}
		e.failedAt = time.Now()
		p.log.Warn("connection to connector lost; reconnecting", "connector", e.info.Name, "err", cause)
	}
	e.mu.Unlock()
	if lost {
		p.startReconnect(e, cause)
	}
	p.changed()
}

// setPath records a path change reported by the dialer (e.g. a relayed
// connection that migrated to a direct path).
func (p *pool) setPath(connectorID string, pi PathInfo) {
	p.mu.Lock()
	e := p.entries[connectorID]
	p.mu.Unlock()
	if e == nil {
		return
	}
	e.mu.Lock()
	e.path = pi
	e.mu.Unlock()
	p.log.Info("connector path changed", "connector", e.info.Name, "path", pi.Path, "transport", pi.Transport, "remote", pi.RemoteAddr)
	p.changed()
}

// snapshot returns the status of every known connector.
func (p *pool) snapshot() []connSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]connSnapshot, 0, len(p.entries))
	for _, e := range p.entries {
		e.mu.Lock()
		s := connSnapshot{
			info: e.info, path: e.path, connected: e.conn != nil, tokenExp: e.tokenExp,
			active: e.active.Load(), total: e.total.Load(), up: e.bytesUp.Load(), down: e.bytesDown.Load(),
			state: e.stateLocked(), since: e.since, lastErr: e.lastErr,
		}
		if e.conn != nil {
			s.rtt = e.conn.ConnectionStats().SmoothedRTT
		}
		e.mu.Unlock()
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].info.Name < out[j].info.Name })
	return out
}

type connSnapshot struct {
	info                    controlapi.ConnectorInfo
	path                    PathInfo
	connected               bool
	rtt                     time.Duration
	tokenExp                time.Time
	active, total, up, down int64
	state                   string
	since                   time.Time
	lastErr                 string
}
