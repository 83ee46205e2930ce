package dnsproxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends queries to the upstream resolvers: the one that answered
// last first, the others in turn when it fails; over UDP, then TCP when the
// answer is truncated.
//
// Against off-path spoofing (a blind attacker racing the upstream's answer)
// each UDP query goes out from a fresh socket (a new random source port from
// the OS), carries a random ID and a question name in random letter case
// (DNS 0x20); a reply counts only when it comes from the upstream's address
// to that port with the same ID and the question in exactly that case.
// Anything else is dropped and the wait goes on until the timeout.
type forwarder struct {
	timeout time.Duration
	log     *slog.Logger
	tcp     *dns.Client
	set     atomic.Pointer[upstreamSet]
	// mismatched counts UDP replies dropped for a wrong ID or question.
	mismatched atomic.Uint64
}

// upstreamSet is one generation of upstreams (replaced as a whole by
// SetUpstreams).
type upstreamSet struct {
	list      []netip.AddrPort
	preferred atomic.Int32
}

// maxUpstreamUDP caps the EDNS buffer size asked of upstreams.
const maxUpstreamUDP = 4096

func newForwarder(ups []netip.AddrPort, timeout time.Duration, log *slog.Logger) *forwarder {
	f := &forwarder{
		timeout: timeout,
		log:     log,
		tcp:     &dns.Client{Net: "tcp"},
	}
	f.setUpstreams(ups)
	return f
}

// setUpstreams replaces the upstreams; queries under way finish with the
// old ones.
func (f *forwarder) setUpstreams(ups []netip.AddrPort) {
	f.set.Store(&upstreamSet{list: ups})
}

func (f *forwarder) upstreams() []netip.AddrPort { return f.set.Load().list }

// exchangeUDP sends m to up from a fresh connected UDP socket and waits for
// the reply that matches m (see forwarder), skipping any other datagram.
func (f *forwarder) exchangeUDP(ctx context.Context, m *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	out, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	size := dns.MinMsgSize
	if o := m.IsEdns0(); o != nil && int(o.UDPSize()) > size {
		size = int(o.UDPSize())
	}
	buf := make([]byte, size)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, context.DeadlineExceeded
			}
			return nil, err // e.g. ICMP port unreachable: nothing listens

		}
		resp := new(dns.Msg)
		if err := resp.Unpack(buf[:n]); err != nil || resp.Id != m.Id {
			f.mismatched.Add(1)
			continue
		}
		if err := checkAnswer(m, resp); err != nil {
			f.mismatched.Add(1)
			f.log.Debug("dns: dropped a reply that does not match the query", "upstream", up, "err", err)
			continue
		}
		return resp, nil
	}
}

// close is kept for Serve's shutdown; sockets live only for one query.
func (f *forwarder) close() {}

// randomizeCase returns name with each ASCII letter in a random case (DNS
// 0x20). Escaped bytes (\DDD, \X) are left as they are.
func randomizeCase(name string) string {
	b := []byte(name)
	var bits [8]byte
	for i := 0; i < len(b); i++ {
		if i%64 == 0 {
			rand.Read(bits[:])
		}
		c := b[i]
		if c == '\\' {
			i++ // keep the escaped byte
			continue
		}
		if 'a' <= c|0x20 && c|0x20 <= 'z' {
			if bits[(i%64)/8]&(1<<(i%8)) != 0 {
				b[i] = c | 0x20
			} else {
				b[i] = c &^ 0x20
			}
		}
	}
	return string(b)
}

// restoreCase puts the client's spelling of the question back into resp:
// the question and the owner names that are the randomized name.
func restoreCase(resp *dns.Msg, sent, orig []dns.Question) {
	if len(sent) != len(orig) {
		return
	}
	for i := range sent {
		if i < len(resp.Question) && resp.Question[i].Name == sent[i].Name {
			resp.Question[i].Name = orig[i].Name
		}
		for _, sec := range [][]dns.RR{resp.Answer, resp.Ns, resp.Extra} {
			for _, rr := range sec {
				if h := rr.Header(); h.Name == sent[i].Name {
					h.Name = orig[i].Name
				}
			}
		}
	}
}

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
		resp, err := f.try(actx, m, req.Question, up)
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
// truncated answer is kept if TCP fails). Each attempt has a new ID and a new
// random case of the question (orig is the client's question).
func (f *forwarder) try(ctx context.Context, m *dns.Msg, orig []dns.Question, up netip.AddrPort) (*dns.Msg, error) {
	newAttempt(m, orig)
	addr := up.String()
	resp, err := f.exchangeUDP(ctx, m, up)
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	restoreCase(resp, m.Question, orig)
	if !resp.Truncated {
		return resp, nil
	}
	newAttempt(m, orig)
	full, _, err := f.tcp.ExchangeContext(ctx, m, addr)
	if err == nil {
		err = checkAnswer(m, full)
	}
	if err != nil {
		f.log.Debug("dns: TCP retry after truncation failed; passing the truncated answer on", "upstream", addr, "err", err)
		return resp, nil
	}
	restoreCase(full, m.Question, orig)
	return full, nil
}

// newAttempt gives m a fresh ID and question names in a fresh random case.
func newAttempt(m *dns.Msg, orig []dns.Question) {
	m.Id = dns.Id()
	for i := range m.Question {
		m.Question[i].Name = randomizeCase(orig[i].Name)
	}
}

// checkAnswer makes sure resp answers m: same question, its name in exactly
// the case sent (0x20), so that a stray or spoofed packet is not passed on.
func checkAnswer(m, resp *dns.Msg) error {
	if !resp.Response {
		return errors.New("reply is not a response")
	}
	if len(m.Question) != len(resp.Question) {
		if len(resp.Question) == 0 && noAnswerRcode(resp.Rcode) {
			// Some servers drop the question in errors; such a reply
			// makes the proxy try the next upstream or answer
			// SERVFAIL, so a forged one poisons nothing.
			return nil
		}
		return errors.New("reply has a different question")
	}
	for i, q := range m.Question {
		rq := resp.Question[i]
		if rq.Qtype != q.Qtype || rq.Qclass != q.Qclass || rq.Name != q.Name {
			return fmt.Errorf("reply is for %s, not %s", rq.Name, q.Name)
		}
	}
	return nil
}

// noAnswerRcode reports whether rcode carries no answer a client could cache.
func noAnswerRcode(rcode int) bool {
	switch rcode {
	case dns.RcodeFormatError, dns.RcodeServerFailure, dns.RcodeNotImplemented, dns.RcodeRefused:
		return true
	}
	return false
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
