package relay

import (
	"net"
	"net/netip"
	"sync"

	"postern.dev/postern/traversal/udpbatch"
)

// Batched socket I/O for the relay's data path. pion/turn reads and writes
// one datagram per system call: its read loop on the TURN socket
// (recvfrom, then sendto on the relayed socket for every ChannelData) and
// one reader per allocation (recvfrom on the relayed socket, then sendto to
// the client). Under load many datagrams wait in a socket at once; these
// wrappers take them all with one recvmmsg and hand them to pion one by one,
// and the relayed sockets of UDP allocations queue what the read loop writes
// to peers and send it before the read loop blocks again, runs to one peer
// as one GSO sendmsg.
// pion/turn still decides every packet (permissions, channel bindings,
// quotas and the filters around it); datagrams from peers of a channel pion
// bound are framed for the client past its packet handler, as pion framed
// the peer's last datagram (bypass.go).

const (
	// sockBuf is the receive and send buffer the relay asks for on its UDP
	// sockets (the kernel caps it at net.core.rmem_max/wmem_max): the
	// default (about 200 KiB, 90 full-size datagrams) overflowed during
	// single bulk flows when the relay got no CPU for a millisecond.
	sockBuf = 4 << 20
	// serverBatch and relayedBatch are the datagrams one system call moves
	// on the TURN socket and on each relayed socket.
	serverBatch  = 32
	relayedBatch = 16
)

// setSockBufs asks for larger socket buffers on pc (best effort: a relay
// that may not raise them works as before).
func setSockBufs(pc net.PacketConn) {
	if uc, ok := pc.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		_ = uc.SetReadBuffer(sockBuf)
		_ = uc.SetWriteBuffer(sockBuf)
	}
}

// batchWriter queues datagrams for one socket and sends them on flush, runs
// to one peer with GSO (traversal/udpbatch). Failed sends are dropped, as a lossy
// link would.
type batchWriter struct {
	mu sync.Mutex
	w  *udpbatch.Writer
}

func newBatchWriter(uc *net.UDPConn) *batchWriter {
	return &batchWriter{w: udpbatch.NewWriter(uc)}
}

// queue copies b for to; it reports whether b was queued (false: to is no
// UDP address, and the caller sends b at once). A full queue is sent first.
func (w *batchWriter) queue(b []byte, to net.Addr) bool {
	ua, ok := to.(*net.UDPAddr)
	if !ok {
		return false
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w.Len() >= udpbatch.MaxSegments {
		_ = w.w.Flush()
	}
	w.w.Append(nil, b, ap)
	return true
}

func (w *batchWriter) flush() {
	w.mu.Lock()
	_ = w.w.Flush()
	w.mu.Unlock()
}

// flushSet is the set of writers with queued datagrams, flushed by the
// read loop before it blocks.
type flushSet struct {
	mu    sync.Mutex
	dirty []*batchWriter
}

func (s *flushSet) mark(w *batchWriter) {
	s.mu.Lock()
	for _, x := range s.dirty {
		if x == w {
			s.mu.Unlock()
			return
		}
	}
	s.dirty = append(s.dirty, w)
	s.mu.Unlock()
}

func (s *flushSet) flush() {
	s.mu.Lock()
	ws := s.dirty
	s.dirty = nil
	s.mu.Unlock()
	for _, w := range ws {
		w.flush()
	}
	// Keep the backing array for the next round, without references.
	clear(ws)
	s.mu.Lock()
	if s.dirty == nil {
		s.dirty = ws[:0]
	}
	s.mu.Unlock()
}
