package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/lograte"
	"postern.dev/postern/internal/srcaddr"
	"postern.dev/postern/traversal/udpbatch"
)

// Bounds on client connections that have not yet presented a token
// (Config.MaxPendingConns, Config.MaxPendingPerAddr). A connection is
// pending from its first Initial packet until its first token is accepted:
// the QUIC handshake (up to 10 s of HandshakeIdleTimeout) and then up to
// authWait for the token. Anyone who can send UDP to the connector can make
// one, and each holds a quic-go connection, its goroutines and buffers.
// A legitimate connection is pending for two or three round trips, so even a
// large office behind one NAT, reconnecting all at once after a connector
// restart, keeps few pending at a time.
const (
	DefaultMaxPendingConns   = 2048
	DefaultMaxPendingPerAddr = 128
)

// Above these counts of pending connections whose source address is not yet
// validated, a new connection must first prove its address with a QUIC Retry
// (RFC 9000, section 8.1.2): one more round trip, and no state at the
// connector until the client echoes the token. Spoofed Initial packets then
// cost nothing, and cannot fill another address's quota.
const (
	retryAbovePerAddr = 16
	retryAboveTotal   = 256
)

// A source (address and port) that was refused stays refused for
// refusedHold. A client's ClientHello may fill two Initial packets, and
// quic-go keeps no state for a connection it refused, so each of them asks
// for a new connection. Without the hold, one handled after a place had
// been freed took it for a client that had already given up, and held it
// until its handshake timed out. A client's reconnect loop redials after
// 125 ms at the soonest, beyond the hold; a dial for a flow opened within
// it is refused once more, which a source at its limit would mostly be
// anyway.
// At most maxRefusedHeld sources are remembered; past that, expired entries
// are dropped, and while all are live a refusal is not remembered (the
// limits hold regardless).
const (
	refusedHold    = 100 * time.Millisecond
	maxRefusedHeld = 4096
)

// errTooManyPending is what admission.connContext refuses with; quic-go
// answers the Initial with CONNECTION_REFUSED.
var errTooManyPending = errors.New("too many connections awaiting a token")

// admission counts pending connections per source address and in total.
// It is installed on every QUIC transport the connector serves (the UDP
// socket's and relayed ones) through quic-go's ConnContext and
// VerifySourceAddress hooks.
type admission struct {
	maxTotal, maxPerAddr int
	onRefuse             func(source netip.Prefix, why string)
	warn                 *lograte.Limiter // for onRefuse's log lines

	now func() time.Time

	mu         sync.Mutex
	pend       srcaddr.Counts               // pending connections
	unverified srcaddr.Counts               // of them, those with an unvalidated source address
	refused    map[netip.AddrPort]time.Time // source -> refused until (refusedHold)
}

func newAdmission(maxTotal, maxPerAddr int, onRefuse func(netip.Prefix, string)) *admission {
	return &admission{maxTotal: maxTotal, maxPerAddr: maxPerAddr, onRefuse: onRefuse, warn: lograte.New(limitWarnEvery),
		now: time.Now, refused: map[netip.AddrPort]time.Time{}}
}

// install sets the hooks on tr. It must run before tr serves a listener.
func (a *admission) install(tr *quic.Transport) {
	tr.ConnContext = a.connContext
	tr.VerifySourceAddress = a.needRetry
}

// needRetry reports whether a new connection from addr must validate its
// address first (quic-go's VerifySourceAddress).
func (a *admission) needRetry(addr net.Addr) bool {
	k := srcaddr.Key(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unverified.Total() >= retryAboveTotal || a.unverified.Of(k) >= retryAbovePerAddr
}

type admitKey struct{}

// admitTicket is one pending connection's place in the counts.
type admitTicket struct {
	once sync.Once
	done func()
}

// release gives the place back; only the first call counts.
func (t *admitTicket) release() { t.once.Do(t.done) }

// connContext admits a new connection (quic-go's ConnContext, called when its
// first Initial arrives) or refuses it. The place is released when the
// session accepts the first token (admitted) or the connection ends.
func (a *admission) connContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	k := srcaddr.Key(ci.RemoteAddr)
	src, _ := udpbatch.AddrPortOf(ci.RemoteAddr) // zero for other addresses: no hold
	unver := !ci.AddrVerified
	now := a.now()
	a.mu.Lock()
	var why string
	switch {
	case src.IsValid() && now.Before(a.refused[src]):
		why = fmt.Sprintf("%s was refused less than %v ago", src, refusedHold)
	case a.pend.Total() >= a.maxTotal:
		why = fmt.Sprintf("%d connections awaiting a token, the connector's limit", a.pend.Total())
	case a.pend.Of(k) >= a.maxPerAddr:
		why = fmt.Sprintf("%d connections from %s awaiting a token, the limit per address", a.pend.Of(k), srcaddr.String(k))
	}
	if why != "" {
		a.holdRefused(src, now)
		a.mu.Unlock()
		if a.onRefuse != nil {
			a.onRefuse(k, why)
		}
		return ctx, fmt.Errorf("%w: %s", errTooManyPending, why)
	}
	a.pend.Add(k)
	if unver {
		a.unverified.Add(k)
	}
	a.mu.Unlock()
	t := &admitTicket{done: func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.pend.Done(k)
		if unver {
			a.unverified.Done(k)
		}
	}}
	context.AfterFunc(ctx, t.release)
	return context.WithValue(ctx, admitKey{}, t), nil
}

// holdRefused remembers src as refused until refusedHold after now. The
// caller holds a.mu.
func (a *admission) holdRefused(src netip.AddrPort, now time.Time) {
	if !src.IsValid() {
		return
	}
	if _, ok := a.refused[src]; !ok && len(a.refused) >= maxRefusedHeld {
		for s, until := range a.refused {
			if !now.Before(until) {
				delete(a.refused, s)
			}
		}
		if len(a.refused) >= maxRefusedHeld {
			return
		}
	}
	a.refused[src] = now.Add(refusedHold)
}

// register adds the pending-connection gauge to reg.
func (a *admission) register(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "postern_connector_pending_connections",
		Help: "Client connections awaiting a token (QUIC handshake, then the token).",
	}, func() float64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return float64(a.pend.Total())
	}))
}

// pending is the number of pending connections, in total and from addr's
// source key.
func (a *admission) pending(addr net.Addr) (total, fromAddr int) {
	k := srcaddr.Key(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pend.Total(), a.pend.Of(k)
}

// admitted releases conn's place, once its first token is accepted.
func admitted(conn *quic.Conn) {
	if t, ok := conn.Context().Value(admitKey{}).(*admitTicket); ok {
		t.release()
	}
}

// refusedPending counts and logs a connection refused by admission; the log
// line at most once per address and limitWarnEvery.
func (c *Connector) refusedPending(source netip.Prefix, why string) {
	c.met.handshakeFail.WithLabelValues("too many connections awaiting a token").Inc()
	if src := srcaddr.String(source); c.admit.warn.Allow(src, time.Now()) {
		c.log.Warn("refusing client connections: too many awaiting a token", "source", src, "why", why)
	}
}
