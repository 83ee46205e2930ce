package traversal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/stun"

	"postern.dev/postern/traversal/stunguard"
)

// packetIO is the part of a quic.Transport the mux uses: it shares the QUIC
// socket for STUN without wrapping it.
type packetIO interface {
	WriteTo(b []byte, addr net.Addr) (int, error)
	ReadNonQUICPacket(ctx context.Context, b []byte) (int, net.Addr, error)
}

// checkHandler receives verified incoming checks for one local ufrag.
type checkHandler interface {
	localPwd() string
	remoteUfragOK(ufrag string) bool
	onCheck(m *mux, from net.Addr)
}

// mux reads the non-QUIC packets of one transport: it answers connectivity
// checks for the sessions registered on it and routes STUN responses to the
// transaction waiting for them.
type mux struct {
	io       packetIO
	kind     string // "udp" (plain socket) or "relay-udp"/"relay-tls"
	log      *slog.Logger
	mu       sync.Mutex
	pending  map[[stun.TransactionIDSize]byte]chan response
	sessions map[string]checkHandler
	// primer, when set, sends a packet that opens this socket's own NAT
	// mapping towards an address without reaching the peer's NAT (a plain
	// socket; see lowTTL). Relayed transports have none.
	primer func(b []byte, to *net.UDPAddr) error
}

type response struct {
	msg  *stun.Message
	from net.Addr
}

func newMux(io packetIO, kind string, log *slog.Logger) *mux {
	m := &mux{io: io, kind: kind, log: log,
		pending:  map[[stun.TransactionIDSize]byte]chan response{},
		sessions: map[string]checkHandler{}}
	// quic-go drops non-QUIC packets until the transport's first
	// ReadNonQUICPacket call. run makes it, but in its own goroutine: the
	// answer to a STUN request sent before that goroutine ran was lost
	// (a relay ranked as dead for the whole RankTimeout, seen in CI). One
	// call with a cancelled context turns the queueing on now.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	buf := make([]byte, 2048)
	if n, from, err := io.ReadNonQUICPacket(ctx, buf); err == nil && n > 0 {
		m.handle(buf[:n], from) // buf is not read into again
	}
	return m
}

func (m *mux) register(ufrag string, h checkHandler) {
	m.mu.Lock()
	m.sessions[ufrag] = h
	m.mu.Unlock()
}

func (m *mux) unregister(ufrag string) {
	m.mu.Lock()
	delete(m.sessions, ufrag)
	m.mu.Unlock()
}

// run reads until ctx ends or the transport closes.
func (m *mux) run(ctx context.Context) error {
	buf := make([]byte, 2048)
	for {
		n, from, err := m.io.ReadNonQUICPacket(ctx, buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %s transport: %w", m.kind, err)
		}
		m.handle(append([]byte(nil), buf[:n]...), from)
	}
}

func (m *mux) handle(b []byte, from net.Addr) {
	if stunguard.Check(b) != nil { // also refuses what is not STUN
		return
	}
	msg := &stun.Message{Raw: b}
	if err := msg.Decode(); err != nil {
		return
	}
	switch msg.Type.Class {
	case stun.ClassSuccessResponse, stun.ClassErrorResponse:
		m.mu.Lock()
		ch := m.pending[msg.TransactionID]
		delete(m.pending, msg.TransactionID)
		m.mu.Unlock()
		if ch != nil {
			ch <- response{msg: msg, from: from}
		}
	case stun.ClassRequest:
		if msg.Type.Method != stun.MethodBinding {
			return
		}
		local, remote, ok := splitUsername(msg)
		if !ok {
			return // not a check: this socket is no public STUN server
		}
		m.mu.Lock()
		h := m.sessions[local]
		m.mu.Unlock()
		if h == nil || !h.remoteUfragOK(remote) {
			return
		}
		pwd := h.localPwd()
		if err := stun.NewShortTermIntegrity(pwd).Check(msg); err != nil {
			m.log.Debug("check with bad integrity", "from", from.String())
			return
		}
		resp, err := checkResponse(msg, from, pwd)
		if err != nil {
			return
		}
		if _, err := m.io.WriteTo(resp.Raw, from); err != nil {
			m.log.Debug("answer check", "to", from.String(), "err", err)
		}
		h.onCheck(m, from)
	}
}

// transact sends req to addr and waits for the response with the same
// transaction id.
func (m *mux) transact(ctx context.Context, req *stun.Message, to net.Addr, timeout time.Duration) (response, error) {
	wait, err := m.send(req, to)
	if err != nil {
		return response{}, err
	}
	return wait(ctx, timeout)
}

// send sends req to addr now and returns the wait for its response (which
// must be called once).
func (m *mux) send(req *stun.Message, to net.Addr) (func(context.Context, time.Duration) (response, error), error) {
	ch := make(chan response, 1)
	m.mu.Lock()
	m.pending[req.TransactionID] = ch
	m.mu.Unlock()
	done := func() {
		m.mu.Lock()
		delete(m.pending, req.TransactionID)
		m.mu.Unlock()
	}
	if _, err := m.io.WriteTo(req.Raw, to); err != nil {
		done()
		return nil, fmt.Errorf("send STUN to %s: %w", to, err)
	}
	return func(ctx context.Context, timeout time.Duration) (response, error) {
		defer done()
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case r := <-ch:
			return r, nil
		case <-t.C:
			return response{}, fmt.Errorf("STUN to %s: %w", to, errTimeout)
		case <-ctx.Done():
			return response{}, ctx.Err()
		}
	}, nil
}

// prime sends one primer (a STUN binding indication, which every receiver
// ignores) towards to with a TTL that ends it past our own NAT.
func (m *mux) prime(to *net.UDPAddr) error {
	if m.primer == nil {
		return nil
	}
	ind, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint)
	if err != nil {
		return err
	}
	return m.primer(ind.Raw, to)
}

var (
	errTimeout      = errors.New("no response")
	errRefused      = errors.New("check refused")
	errBadIntegrity = errors.New("check response with bad integrity")
)

// reflexive asks a STUN server (a relay's UDP port) for this socket's
// server-reflexive address.
func (m *mux) reflexive(ctx context.Context, server net.Addr) (*net.UDPAddr, error) {
	var last error
	for i := 0; i < 3; i++ {
		req, err := stunBinding()
		if err != nil {
			return nil, err
		}
		r, err := m.transact(ctx, req, server, 700*time.Millisecond)
		if err != nil {
			last = err
			if ctx.Err() != nil {
				return nil, err
			}
			continue
		}
		if r.msg.Type.Class != stun.ClassSuccessResponse {
			return nil, fmt.Errorf("STUN server %s refused binding", server)
		}
		return mappedAddr(r.msg)
	}
	return nil, fmt.Errorf("server-reflexive address from %s: %w", server, last)
}

// probe asks server for a STUN binding as RFC 5389 section 7.2.1 does over
// UDP: a lost request or response is sent again after a retransmission
// timeout that starts at 250 ms and doubles, until total has passed. Each
// attempt is its own transaction, so the round trip returned is that of the
// attempt that was answered, not of the whole probe.
func (m *mux) probe(ctx context.Context, server net.Addr, total time.Duration) (response, time.Duration, error) {
	deadline := time.Now().Add(total)
	rto := 250 * time.Millisecond
	var last error
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return response{}, 0, last
		}
		if rto > left {
			rto = left
		}
		req, err := stunBinding()
		if err != nil {
			return response{}, 0, err
		}
		start := time.Now()
		r, err := m.transact(ctx, req, server, rto)
		if err == nil {
			return r, time.Since(start), nil
		}
		if ctx.Err() != nil || !errors.Is(err, errTimeout) {
			return response{}, 0, err
		}
		last = err
		rto *= 2
	}
}

// primerTTL is the TTL of primers: it takes them through the sender's own
// NAT (its first hop, as for home and office routers) and ends them at the
// next router, well before the peer's NAT.
const primerTTL = 2
