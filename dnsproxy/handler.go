package dnsproxy

import (
	"context"
	"net"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Handler is the shape every stage of the proxy's chain has (as in
// CoreDNS): it answers r through w, or passes it to its Next stage.
type Handler interface {
	ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, w dns.ResponseWriter, r *dns.Msg)

// ServeDNS calls f.
func (f HandlerFunc) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) { f(ctx, w, r) }

// ednsSize is the EDNS buffer size the proxy advertises in its own answers
// (the DNS flag day 2020 value, safe from fragmentation).
const ednsSize = 1232

// limitHandler is the first stage: it bounds the queries in flight (a
// flood beyond MaxInFlight is dropped, so memory stays bounded) and rejects
// messages that are not plain queries.
type limitHandler struct {
	sem     chan struct{}
	dropped atomic.Uint64
	Next    Handler
}

func (h *limitHandler) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) {
	select {
	case h.sem <- struct{}{}:
	default:
		// Over the limit: drop. UDP clients retry; answering would cost the
		// same work the limit is there to shed.
		h.dropped.Add(1)
		return
	}
	defer func() { <-h.sem }()
	if r.Response {
		return // never answer a response (reflection loops)
	}
	if r.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNotImplemented)
		m.Question = nil
		w.WriteMsg(m)
		return
	}
	if len(r.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcodeFormatError(r)
		m.Question = nil
		w.WriteMsg(m)
		return
	}
	h.Next.ServeDNS(ctx, w, r)
}

// isUDP reports whether w answers over a datagram transport.
func isUDP(w dns.ResponseWriter) bool {
	switch w.RemoteAddr().(type) {
	case *net.TCPAddr:
		return false
	case *net.UDPAddr:
		return true
	}
	return w.RemoteAddr() != nil && w.RemoteAddr().Network() != "tcp"
}

// replySize is the largest answer w may carry for request r: over UDP the
// client's EDNS buffer (512 without EDNS), over TCP the proxy's cap.
func replySize(w dns.ResponseWriter, r *dns.Msg, maxSize int) int {
	if !isUDP(w) {
		return maxSize
	}
	size := dns.MinMsgSize
	if o := r.IsEdns0(); o != nil && int(o.UDPSize()) > size {
		size = int(o.UDPSize())
	}
	return min(size, maxSize)
}

// newReply starts an answer to r, echoing EDNS when r used it.
func newReply(r *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	m.RecursionAvailable = true
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(ednsSize, o.Do())
	}
	return m
}
