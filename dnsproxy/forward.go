package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends queries to the upstream resolvers: the one that answered
// last first, the others in turn when it fails; over UDP, then TCP when the
// answer is truncated.
type forwarder struct {
	timeout  time.Duration
	log      *slog.Logger
	udp, tcp *dns.Client
	set      atomic.Pointer[upstreamSet]
}

// upstreamSet is one generation of upstreams (replaced as a whole by
// SetUpstreams).
type upstreamSet struct {
	list      []netip.AddrPort
	preferred atomic.Int32
	// idle holds connected UDP sockets per upstream for reuse: a socket per
	// query costs more than the query. Each socket serves one query at a
	// time; replies with another ID (late answers to an earlier query) are
	// skipped by the client.
	idle   map[netip.AddrPort]chan *dns.Conn
	closed atomic.Bool
}

// maxUpstreamUDP caps the EDNS buffer size asked of upstreams.
const maxUpstreamUDP = 4096

// idleSockets is how many sockets per upstream are kept for reuse.
const idleSockets = 128

func newForwarder(ups []netip.AddrPort, timeout time.Duration, log *slog.Logger) *forwarder {
	f := &forwarder{
		timeout: timeout,
		log:     log,
		udp:     &dns.Client{Net: "udp"}, // reads 512 bytes, or the query's EDNS size
		tcp:     &dns.Client{Net: "tcp"},
	}
	f.setUpstreams(ups)
	return f
}

// setUpstreams replaces the upstreams; queries under way finish with the
// old ones.
func (f *forwarder) setUpstreams(ups []netip.AddrPort) {
	s := &upstreamSet{list: ups, idle: make(map[netip.AddrPort]chan *dns.Conn, len(ups))}
	for _, u := range ups {
		s.idle[u] = make(chan *dns.Conn, idleSockets)
	}
	if old := f.set.Swap(s); old != nil {
		old.close()
	}
}

func (f *forwarder) upstreams() []netip.AddrPort { return f.set.Load().list }

// exchangeUDP sends m to up over a reused (or new) connected UDP socket.
func (f *forwarder) exchangeUDP(ctx context.Context, s *upstreamSet, m *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	var co *dns.Conn
	select {
	case co = <-s.idle[up]:
	default:
		var err error
		if co, err = f.udp.DialContext(ctx, up.String()); err != nil {
			return nil, err
		}
	}
	resp, _, err := f.udp.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		co.Close() // a late answer could still arrive on it
		return nil, err
	}
	if s.closed.Load() {
		co.Close()
		return resp, nil
	}
	select {
	case s.idle[up] <- co:
	default:
		co.Close()
	}
	return resp, nil
}

// close releases the idle sockets of a set no longer in use.
func (s *upstreamSet) close() {
	s.closed.Store(true)
	for _, ch := range s.idle {
		for drained := false; !drained; {
			select {
			case co := <-ch:
				co.Close()
			default:
				drained = true
			}
		}
	}
}

// close releases the idle sockets.
func (f *forwarder) close() { f.set.Load().close() }

// exchange forwards req (unchanged but for its ID: EDNS options and flags
// are kept) and returns the answer with req's ID and the upstream that gave
// it. It gives up after the forwarder's timeout.
func (f *forwarder) exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, netip.AddrPort, error) {
	set := f.set.Load()
	n := len(set.list)
	if n == 0 {
		return nil, netip.AddrPort{}, ErrNoUpstream
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	m := req.Copy()
	if o := m.IsEdns0(); o != nil && o.UDPSize() > maxUpstreamUDP {
		// Bigger answers come over TCP; a huge read buffer per query
		// would cost more than it saves.
		o.SetUDPSize(maxUpstreamUDP)
	}
	start := int(set.preferred.Load()) % n
	var (
		last    *dns.Msg
		lastUp  netip.AddrPort
		errs    []error
		lastIdx = -1
	)
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		up := set.list[idx]
		remaining := time.Until(deadline)
		if remaining <= 0 || ctx.Err() != nil {
			break
		}
		// Share what is left between the upstreams not yet tried.
		actx, acancel := ctx, context.CancelFunc(func() {})
		if n-i > 1 {
			actx, acancel = context.WithTimeout(ctx, remaining/time.Duration(n-i))
		}
		resp, err := f.try(actx, set, m, up)
		acancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			continue
		}
		last, lastUp, lastIdx = resp, up, idx
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			continue // another upstream may do better
		}
		break
	}
	if last == nil {
		if ctx.Err() != nil && len(errs) == 0 {
			errs = append(errs, ctx.Err())
		}
		return nil, netip.AddrPort{}, fmt.Errorf("%w: %w", ErrUpstream, errors.Join(errs...))
	}
	if lastIdx != start {
		set.preferred.Store(int32(lastIdx))
	}
	last.Id = req.Id
	return last, lastUp, nil
}

// try asks one upstream: UDP first, TCP when the answer is truncated (the
// truncated answer is kept if TCP fails).
func (f *forwarder) try(ctx context.Context, set *upstreamSet, m *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	m.Id = dns.Id()
	addr := up.String()
	resp, err := f.exchangeUDP(ctx, set, m, up)
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	if err := checkAnswer(m, resp); err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	if !resp.Truncated {
		return resp, nil
	}
	m.Id = dns.Id()
	full, _, err := f.tcp.ExchangeContext(ctx, m, addr)
	if err == nil {
		err = checkAnswer(m, full)
	}
	if err != nil {
		f.log.Debug("dns: TCP retry after truncation failed; passing the truncated answer on", "upstream", addr, "err", err)
		return resp, nil
	}
	return full, nil
}

// checkAnswer makes sure resp answers m (same question), so that a stray or
// spoofed packet is not passed on.
func checkAnswer(m, resp *dns.Msg) error {
	if !resp.Response {
		return errors.New("reply is not a response")
	}
	if len(m.Question) != len(resp.Question) {
		if len(resp.Question) == 0 && resp.Rcode != dns.RcodeSuccess {
			return nil // some servers drop the question in errors
		}
		return errors.New("reply has a different question")
	}
	for i, q := range m.Question {
		rq := resp.Question[i]
		if rq.Qtype != q.Qtype || rq.Qclass != q.Qclass || !strings.EqualFold(rq.Name, q.Name) {
			return fmt.Errorf("reply is for %s, not %s", rq.Name, q.Name)
		}
	}
	return nil
}

// forwardHandler is the last stage: it forwards to the upstreams and
// answers SERVFAIL when none answers in time.
type forwardHandler struct {
	p *Proxy
}

func (h *forwardHandler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) {
	resp, _, err := h.p.fwd.exchange(ctx, r)
	if err != nil {
		if ctx.Err() == nil {
			h.p.log.Debug("dns: forward failed", "name", r.Question[0].Name, "err", err)
		}
		h.p.writeReply(w, r, newReply(r, dns.RcodeServerFailure))
		return
	}
	h.p.writeReply(w, r, resp)
}
