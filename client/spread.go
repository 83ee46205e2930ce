package client

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/bulkyield"
)

// Several QUIC connections per connector.
//
// One QUIC connection is one run loop on each side (one goroutine decrypts,
// parses and packs every packet) and one queue: a bulk transfer fills it and
// an interactive flow behind it waits (docs/datapath-performance.md). The
// pool therefore keeps, besides the primary connection of a connEntry (the
// one reconnect, suspect handling, draining and failover are about), up to
// maxConns-1 extra connections to the same connector, each authenticated
// with a Connection Token on its own control stream and refreshed like the
// primary. A new flow goes to a usable connection without a bulk flow, the
// least loaded one (pickLocked); a flow that moves bulkBytes within bulkWindow marks
// its connection bulk until it ends, so later (short, interactive) flows go
// to a connection without one.
//
// One extra (the spare) is dialed as soon as the primary is up, so that an
// interactive flow has a clean connection the moment a bulk flow starts;
// further extras are dialed when a new flow finds every connection loaded
// (spreadAt flows or a bulk flow), and close again after extraIdle without a
// flow. When the primary dies, a live extra takes its place at once.
//
// Separate connections do not separate the CPU, the sockets and the TUN,
// so bulk flows also yield to interactive ones (package bulkyield): while
// a request/response flow of the same connector (bulkyield.Flow: a few
// short exchanges in a row, no bulk lately) moved a message recently, a
// bulk flow's upload waits before each write while its connection is
// queued up beyond pool.bulkTarget.
const (
	maxConnsCap          = 4 // the default's cap
	maxConnsPerConnector = 16
	bulkBytes            = 1 << 20 // bytes within bulkWindow that make a flow bulk
	bulkWindow           = time.Second
	bulkUrgency          = 5                      // quic-go send urgency of a bulk flow (default 3; lower goes first)
	spareWait            = 250 * time.Millisecond // a flow finding only bulk connections waits this long for one being dialed
	extraIdle            = 30 * time.Second       // an extra beyond the spare closes after this long without a flow
	// defaultSpreadAt: a connection with this many flows is full; new flows
	// go to the next one (dialed if needed), so flows spread one per
	// connection, least loaded first. A larger value packs short flows
	// onto fewer connections; BenchmarkParallelFlows compares the two.
	defaultSpreadAt = 1
)

// defaultConnsPerConnector is min(GOMAXPROCS, 4), at least 2: even on one
// core, interactive flows get a connection of their own.
func defaultConnsPerConnector() int {
	n := runtime.GOMAXPROCS(0)
	if n > maxConnsCap {
		n = maxConnsCap
	}
	if n < 2 {
		n = 2
	}
	return n
}

// extraConn is an additional connection to a connector. Its fields other
// than suspect are guarded by the connEntry's mu.
type extraConn struct {
	conn     *quic.Conn
	path     PathInfo
	digest   string
	tokenExp time.Time
	draining bool // refused a refreshed token: no new flows
	suspect  atomic.Bool
	idleAt   time.Time // when its last flow ended (zero while it has flows)
}

// extraLocked returns the extra of e carrying conn; e.mu is held.
func (e *connEntry) extraLocked(conn *quic.Conn) (int, *extraConn) {
	for i, x := range e.extras {
		if x.conn == conn {
			return i, x
		}
	}
	return -1, nil
}

// usableExtraLocked says whether x may take new flows; e.mu is held.
func (e *connEntry) usableExtraLocked(x *extraConn) bool {
	return !x.draining && !x.suspect.Load() && x.digest == e.digest && x.conn.Context().Err() == nil
}

// retireExtraLocked runs on every monitor tick of the extra x (index i in
// e.extras), which carries open flows. An extra retires when it may take no
// new flow (token refused, certificate rotated, primary gone), or when it is
// not the spare and has been idle for extraIdle; either way only once its
// last flow has ended. It reports whether x retires (and forgets it); the
// caller closes it. e.mu is held.
func (e *connEntry) retireExtraLocked(i int, x *extraConn, open int, now time.Time) bool {
	switch {
	case open > 0:
		x.idleAt = time.Time{}
	case x.idleAt.IsZero():
		x.idleAt = now
	case x.draining || x.digest != e.digest || e.conn == nil || (i > 0 && now.Sub(x.idleAt) > extraIdle):
		e.removeExtraLocked(i)
		return true
	}
	return false
}

// removeExtraLocked forgets the extra at index i; e.mu is held.
func (e *connEntry) removeExtraLocked(i int) {
	e.extras = append(e.extras[:i], e.extras[i+1:]...)
}

// place picks the connection to e for a new flow: primary (returned by get)
// or an extra, the one without a bulk flow and with the fewest open flows
// (the primary on ties). It dials another extra when every connection is
// loaded, and when every usable connection carries a bulk flow while one is
// being dialed, it waits up to spareWait for it.
func (p *pool) place(ctx context.Context, e *connEntry, primary *quic.Conn) *quic.Conn {
	for waited := false; ; waited = true {
		e.mu.Lock()
		conns := make([]*quic.Conn, 1, 1+len(e.extras))
		conns[0] = primary
		if e.conn == primary && !e.draining {
			for _, x := range e.extras {
				if e.usableExtraLocked(x) {
					conns = append(conns, x.conn)
				}
			}
		}
		e.mu.Unlock()

		p.loadMu.Lock()
		best, bestLoad, bestBulk := p.pickLocked(conns)
		if !bestBulk || waited {
			// Counted at once (openOn untracks it if the open fails), so
			// that concurrent openings spread.
			p.streams[best]++
		}
		p.loadMu.Unlock()

		if bestBulk || bestLoad >= p.spreadAt {
			p.growExtra(e)
		}
		if !bestBulk || waited {
			return best
		}
		// Every usable connection carries a bulk flow: wait a moment for
		// a clean one being dialed.
		e.mu.Lock()
		done := e.extraDone
		e.mu.Unlock()
		if done == nil {
			continue
		}
		t := time.NewTimer(spareWait)
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// pickLocked chooses among conns (primary first) for a new flow: the first
// one without a bulk flow that holds fewer than spreadAt flows (short flows
// pack onto few connections, where their small packets share the run loop's
// batches), else the one without a bulk flow with the fewest flows, else the
// one with the fewest flows. p.loadMu is held.
func (p *pool) pickLocked(conns []*quic.Conn) (best *quic.Conn, load int, bulk bool) {
	bestFull := false
	for i, c := range conns {
		l, b := p.streams[c], p.bulk[c] > 0
		full := l >= p.spreadAt
		if i == 0 {
			best, load, bulk, bestFull = c, l, b, full
			continue
		}
		switch {
		case b != bulk:
			if b {
				continue
			}
		case full != bestFull:
			if full {
				continue
			}
		case !full || l >= load:
			continue // packing: the earlier one; when full, the less loaded
		}
		best, load, bulk, bestFull = c, l, b, full
	}
	return best, load, bulk
}

// maxConnsLocked is the most connections e may have: max, or 2 (the
// primary and the spare) while its primary is relayed: every relayed
// connection is a TURN allocation, of which the relay grants a principal
// only a few (relay.DefaultMaxAllocationsPerPrincipal), and relayed
// throughput is bound by the relay, not by the run loops. e.mu is held.
func (e *connEntry) maxConnsLocked(max int) int {
	if e.path.Path == "relay" && max > 2 {
		return 2
	}
	return max
}

// growExtra starts dialing one more connection to e when e has a live
// primary and fewer than maxConns connections (counting dials in progress),
// and no extra dial failed within dialBackoff. It reports whether it did.
func (p *pool) growExtra(e *connEntry) bool {
	if p.maxConns < 2 {
		return false
	}
	// Most calls find the entry at its most connections: say so without
	// the pool's write lock, which every flow opening reads.
	e.mu.Lock()
	full := 1+len(e.extras)+e.extraDialing >= e.maxConnsLocked(p.maxConns)
	e.mu.Unlock()
	if full {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil || p.maxConns < 2 {
		return false
	}
	e.mu.Lock()
	if e.removed || e.conn == nil || e.draining || 1+len(e.extras)+e.extraDialing >= e.maxConnsLocked(p.maxConns) ||
		(!e.extraFailedAt.IsZero() && time.Since(e.extraFailedAt) < dialBackoff) {
		e.mu.Unlock()
		return false
	}
	e.extraDialing++
	if e.extraDone == nil {
		e.extraDone = make(chan struct{})
	}
	info := e.info
	e.mu.Unlock()
	p.wg.Add(1)
	go p.dialExtra(e, info)
	return true
}

// dialExtra dials one extra connection and adds it to e.
func (p *pool) dialExtra(e *connEntry, info controlapi.ConnectorInfo) {
	defer p.wg.Done()
	conn, path, digest, exp, ctrl, err := p.dial(p.ctx, e, info, true)
	e.mu.Lock()
	e.extraDialing--
	var done chan struct{}
	if e.extraDialing == 0 {
		done, e.extraDone = e.extraDone, nil
	}
	keep := false
	switch {
	case err != nil:
		e.extraFailedAt = time.Now()
	case e.removed || e.conn == nil || digest != e.digest || p.ctx.Err() != nil:
		// The connector left the policy, the primary died meanwhile (its
		// reconnect owns the entry), or the certificate rotated.
	default:
		e.extraFailedAt = time.Time{}
		e.extras = append(e.extras, &extraConn{conn: conn, path: path, digest: digest, tokenExp: exp, idleAt: time.Now()})
		keep = true
	}
	e.mu.Unlock()
	if done != nil {
		close(done)
	}
	if err != nil {
		p.log.Debug("extra connection to connector failed", "connector", info.Name, "err", err)
		return
	}
	if !keep {
		_ = conn.CloseWithError(quicErrShutdown, "not needed")
		return
	}
	p.wg.Add(2)
	go p.monitor(e, conn)
	go p.refresh(e, conn, ctrl, digest, exp)
	p.changed()
}

// promoteLocked makes a usable extra the primary of e after the primary was
// lost; e.mu is held. It reports whether there was one.
func (p *pool) promoteLocked(e *connEntry) bool {
	for i, x := range e.extras {
		if x.draining || x.suspect.Load() || x.conn.Context().Err() != nil {
			continue
		}
		e.removeExtraLocked(i)
		e.conn, e.path, e.digest, e.tokenExp = x.conn, x.path, x.digest, x.tokenExp
		e.suspect.Store(false)
		return true
	}
	return false
}

// markBulk counts a flow on conn that turned bulk (+1) or ended bulk (-1).
func (p *pool) markBulk(conn *quic.Conn, delta int) {
	p.loadMu.Lock()
	if p.bulk[conn] += delta; p.bulk[conn] <= 0 {
		delete(p.bulk, conn)
	}
	p.loadMu.Unlock()
}

// connCount reports how many connections e has (primary and extras).
func (e *connEntry) connCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.extras)
	if e.conn != nil {
		n++
	}
	return n
}

// Flow bulk states (flow.bulk).
const (
	flowInteractive int32 = iota
	flowBulk
	flowDone
)

// yieldToInteractive runs before each upload write of a flow; a bulk flow
// waits while interactive flows of its connector are active and its
// connection is queued up.
func (f *flow) yieldToInteractive() {
	if f.p.shouldYield(f.e, f.bulk.Load(), time.Now()) {
		bulkyield.Wait(f.conn.ConnectionStats, f.p.bulkTarget, time.Sleep)
	}
}

// shouldYield says whether a flow in bulk state state, writing at now,
// yields: it is bulk, yielding is on, and an interactive flow of e moved a
// message recently.
func (p *pool) shouldYield(e *connEntry, state int32, now time.Time) bool {
	return state == flowBulk && p.bulkTarget > 0 && e.interactive.Active(now)
}

// account adds n bytes moved in direction d (Up: the application's upload)
// to the flow's window and marks its connection bulk when the flow moved
// bulkBytes within bulkWindow. Until then its classifier (bulkyield.Flow)
// tells whether it is a request/response flow, whose messages make the
// connector's bulk flows yield; a bulk flow never is. Both copy directions
// call it; the window is approximate under their race, which is enough.
func (f *flow) account(d bulkyield.Direction, n int) {
	if n <= 0 || f.bulk.Load() != flowInteractive {
		return
	}
	t := time.Now()
	f.cls.Saw(&f.e.interactive, d, n, t) // bulk flows of this connector yield to it
	now := t.UnixNano()
	if now-f.winStart.Load() > int64(bulkWindow) {
		f.winStart.Store(now)
		f.winBytes.Store(int64(n))
		return
	}
	if f.winBytes.Add(int64(n)) >= bulkBytes && f.bulk.CompareAndSwap(flowInteractive, flowBulk) {
		f.p.markBulk(f.conn, 1)
		// Its uploads yield to the short flows of the same connection
		// (the connector demotes its downloads the same way).
		f.Stream.SetPriority(bulkUrgency, true)
	}
}
