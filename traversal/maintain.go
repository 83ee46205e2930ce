package traversal

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/sigwire"
)

// Repair timing.
const (
	repairMinBackoff = 500 * time.Millisecond
	repairMaxBackoff = 10 * time.Second
	repairWait       = 10 * time.Second // for a pair to the connection's address on a new leg
	releaseAfter     = 30 * time.Second // direct this long: an unused allocation is freed
)

// maintain watches a connection for its whole life: while relayed it moves
// the connection to a direct pair when one to the same connector address
// validates, and when the relay is lost it opens a new leg (through any
// listed relay) and moves the connection onto it.
func (d *Dialer) maintain(conn *quic.Conn, st *dialState, c controlapi.ConnectorInfo, cert *tls.Certificate) {
	ctx, cancel := context.WithCancel(d.ctx)
	defer cancel()
	go func() {
		select {
		case <-conn.Context().Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	remote, _ := conn.RemoteAddr().(*net.UDPAddr)
	var directSince time.Time
	var mon pathMonitor
	for {
		l := st.current()
		if l == nil {
			return
		}
		relayed := st.getPath().Path == PathRelay
		switch {
		case relayed:
			directSince = time.Time{}
		case directSince.IsZero():
			directSince = time.Now()
		case time.Since(directSince) > d.releaseAfter:
			l.releaseIdleAllocation()
		}
		if !d.cfg.NoDirect {
			// Learn the server-reflexive address again: while relayed, a
			// first one (UDP was blocked before) lets the connector punch
			// towards us; while direct, a new one means roaming or NAT
			// rebinding, and the connector must punch towards it. The old
			// signaling connection may have died with the old address, so
			// a new leg does that.
			rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
			moved := l.reflexiveChanged(rctx)
			rcancel()
			if moved {
				// Direct: the connector must punch towards the new
				// mapping. Relayed: the TURN allocation belongs to the old
				// address (the relay no longer hears us there), so a new
				// leg allocates again and the connection moves onto it.
				d.log.Info("client address changed; re-punching", "connector", c.ID, "relayed", relayed)
				if !d.repair(ctx, conn, st, c, cert, relayed) {
					return
				}
				continue
			}
		}
		if relayed && !st.onPlain() && !d.cfg.NoDirect && remote != nil {
			kind := sigwire.CandSrflx
			if l.isPeerRelayed(remote.String()) {
				kind = sigwire.CandRelay
			}
			l.s.addTarget(d.m, remote, kind)
			if l.s.isValidated(d.m, remote.String()) {
				// Onto the plain socket: a direct path, or, to a
				// connector's own relayed address, one relay hop less.
				p, _ := l.pathFor(pathEvent{m: d.m, addr: remote})
				if err := d.migrate(ctx, conn, st, d.tr, p); err != nil {
					d.log.Info("migration to the plain socket failed", "connector", c.ID, "err", err)
				}
			}
		}
		if !d.wait(ctx, conn, st, c, cert, l, &mon) {
			return
		}
	}
}

// wait returns after checkSlow, a validated pair, a lost relay that was
// repaired, or a dead direct path that moved onto a relay; false when the
// connection or the dialer ended.
func (d *Dialer) wait(ctx context.Context, conn *quic.Conn, st *dialState, c controlapi.ConnectorInfo, cert *tls.Certificate, l *leg, mon *pathMonitor) bool {
	slow := time.NewTimer(checkSlow)
	defer slow.Stop()
	tick := time.NewTicker(deathTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case err := <-l.sigErr:
			if ctx.Err() != nil || conn.Context().Err() != nil {
				return false
			}
			if st.getPath().Path != PathRelay {
				// Direct: the relay is not carrying the connection; QUIC
				// keepalives hold the NAT mappings. A new leg is opened if
				// the direct path dies.
				d.log.Debug("signaling ended on a direct connection", "connector", c.ID, "err", err)
				l.stop()
				continue
			}
			d.log.Warn("relay lost during a relayed connection; repairing", "connector", c.ID, "relay", l.relay.Name, "err", err)
			return d.repair(ctx, conn, st, c, cert, true)
		case <-l.s.events:
			return true
		case <-slow.C:
			return true
		case <-tick.C:
			if st.getPath().Path != PathDirect || d.cfg.NoRelay || !mon.dead(conn) {
				continue
			}
			// UDP died under the direct path (blocked, a firewall, a
			// network that lost its route): move the running connection
			// onto a relay (over TLS when UDP is blocked) without
			// dropping its streams, as the reverse move does.
			d.log.Warn("direct path silent; moving the connection onto a relay", "connector", c.ID, "remote", conn.RemoteAddr().String())
			l.stop()
			ok := d.repair(ctx, conn, st, c, cert, false)
			mon.reset()
			return ok
		}
	}
}

// Direct-path death detection.
const (
	deathTick       = 500 * time.Millisecond
	directDeadAfter = 3 * time.Second
)

// pathMonitor sees a path die: nothing received for directDeadAfter while
// QUIC kept sending (data, retransmissions, probes or keepalives).
type pathMonitor struct {
	recv, sentAtRecv uint64
	since            time.Time
}

func (m *pathMonitor) reset() { m.since = time.Time{} }

func (m *pathMonitor) dead(conn *quic.Conn) bool {
	s := conn.ConnectionStats()
	now := time.Now()
	if m.since.IsZero() || s.PacketsReceived != m.recv {
		m.recv, m.sentAtRecv, m.since = s.PacketsReceived, s.PacketsSent, now
		return false
	}
	return now.Sub(m.since) > directDeadAfter && s.PacketsSent >= m.sentAtRecv+2
}

// migrate moves conn onto transport tr (same remote address) and records p.
func (d *Dialer) migrate(ctx context.Context, conn *quic.Conn, st *dialState, tr *quic.Transport, p PathInfo) error {
	path, err := conn.AddPath(tr)
	if err != nil {
		return fmt.Errorf("add path: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := path.Probe(pctx); err != nil {
		_ = path.Close()
		return fmt.Errorf("probe %s path: %w", p.Path, err)
	}
	if err := path.Switch(); err != nil {
		_ = path.Close()
		return fmt.Errorf("switch to %s path: %w", p.Path, err)
	}
	st.setPath(p)
	st.setPlain(tr == d.tr)
	d.log.Info("connection moved", "connector", st.connector, "path", p.Path, "transport", p.Transport, "remote", p.RemoteAddr)
	if d.cfg.OnPathChange != nil {
		d.cfg.OnPathChange(st.connector, p)
	}
	return nil
}

// repair opens new legs until one carries the connection again; it returns
// false when the connection ended first.
func (d *Dialer) repair(ctx context.Context, conn *quic.Conn, st *dialState, c controlapi.ConnectorInfo, cert *tls.Certificate, lost bool) bool {
	old := st.current()
	if old == nil {
		return false
	}
	if lost {
		old.stop()
	}
	remote := conn.RemoteAddr().String()
	for backoff := repairMinBackoff; ; backoff = min(backoff*2, repairMaxBackoff) {
		if lost || backoff > repairMinBackoff {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(backoff):
			}
		}
		token, err := d.cfg.ConnectionToken(ctx, c.ID)
		if err != nil {
			d.log.Warn("repair: connection token", "connector", c.ID, "err", err)
			continue
		}
		for _, r := range d.relays(ctx) {
			if d.repairVia(ctx, conn, st, c, r, cert, token, remote) {
				return true
			}
			if ctx.Err() != nil {
				return false
			}
		}
	}
}

func (d *Dialer) repairVia(ctx context.Context, conn *quic.Conn, st *dialState, c controlapi.ConnectorInfo, r controlapi.RelayInfo, cert *tls.Certificate, token, remote string) bool {
	l, err := d.openLeg(ctx, c, r, cert, token)
	if err != nil {
		d.log.Debug("repair: open leg", "relay", r.Name, "err", err)
		return false
	}
	timeout := time.NewTimer(repairWait)
	defer timeout.Stop()
	for {
		select {
		case <-ctx.Done():
			l.close()
			return false
		case <-timeout.C:
			d.log.Info("repair: no pair to the connection's address", "relay", r.Name, "remote", remote)
			l.close()
			return false
		case err := <-l.sigErr:
			d.log.Debug("repair: signaling", "relay", r.Name, "err", err)
			l.close()
			return false
		case ev := <-l.s.events:
			if ev.addr.String() != remote {
				continue // QUIC cannot move to another connector address
			}
			p, tr := l.pathFor(ev)
			if tr == nil || (p.Path == PathDirect && d.cfg.NoDirect) {
				continue
			}
			if p.Path == PathDirect && st.getPath().Path == PathDirect {
				// Same socket, same connector address: the punch reopened
				// the path and QUIC follows the new mapping by itself.
				st.setPath(p)
				st.setPlain(true)
			} else if err := d.migrate(ctx, conn, st, tr, p); err != nil {
				d.log.Info("repair: migrate", "relay", r.Name, "err", err)
				continue
			} else if p.Path == PathRelay {
				l.markCarried()
			}
			st.mu.Lock()
			old := st.cur
			st.cur = l
			st.legs = append(st.legs, l)
			st.mu.Unlock()
			if old != nil {
				old.stop()
			}
			return true
		}
	}
}
