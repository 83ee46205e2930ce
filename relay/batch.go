package relay

import (
	"net"
	"net/netip"
	"runtime"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"postern.dev/postern/traversal/gso"
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
// Every packet is still handled by pion/turn (permissions, channel bindings,
// quotas and the filters around it), only the system calls are shared.

const (
	// sockBuf is the receive and send buffer the relay asks for on its UDP
	// sockets (the kernel caps it at net.core.rmem_max/wmem_max): the
	// default (about 200 KiB, 90 full-size datagrams) overflowed during
	// single bulk flows when the relay got no CPU for a millisecond.
	sockBuf = 4 << 20
	// slotSize is the buffer of one datagram in a batch: a full-size
	// ChannelData (4-byte header, 1500-byte payload) fits, as does pion's
	// limit for relayed datagrams (1600 bytes).
	slotSize = 2048
	// serverBatch and relayedBatch are the datagrams one system call moves
	// on the TURN socket and on each relayed socket.
	serverBatch  = 32
	relayedBatch = 16
)

// batchIO is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchIO interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// newBatchIO returns the batch I/O of pc, or nil when pc is no UDP socket
// or the platform reads only one datagram per call anyway.
func newBatchIO(pc net.PacketConn) batchIO {
	uc, ok := pc.(*net.UDPConn)
	if !ok || runtime.GOOS != "linux" {
		return nil
	}
	if la, ok := uc.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		return ipv6.NewPacketConn(uc) // IPv6, or dual-stack bound to ::
	}
	return ipv4.NewPacketConn(uc)
}

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

// batchReader hands out the datagrams of one recvmmsg one by one. It is
// used by a single reader goroutine (pion's read loop for the socket).
type batchReader struct {
	io         batchIO
	msgs       []ipv4.Message
	next, have int
	// beforeBlock, if set, runs before a read that may block (all queued
	// datagrams were handed out): the flush of writes queued meanwhile.
	beforeBlock func()
}

func newBatchReader(io batchIO, n int) *batchReader {
	r := &batchReader{io: io, msgs: make([]ipv4.Message, n)}
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, slotSize)}
	}
	return r
}

// ReadFrom copies the next datagram into b, as net.PacketConn.ReadFrom (a
// datagram larger than b is truncated to it).
func (r *batchReader) ReadFrom(b []byte) (int, net.Addr, error) {
	if r.next == r.have {
		if r.beforeBlock != nil {
			r.beforeBlock()
		}
		r.next, r.have = 0, 0
		n, err := r.io.ReadBatch(r.msgs, 0)
		if err != nil {
			return 0, nil, err
		}
		r.have = n
	}
	m := &r.msgs[r.next]
	r.next++
	n := copy(b, m.Buffers[0][:m.N])
	return n, m.Addr, nil
}

// batchWriter queues datagrams for one socket and sends them on flush, runs
// to one peer with GSO (traversal/gso). Failed sends are dropped, as a lossy
// link would.
type batchWriter struct {
	mu sync.Mutex
	w  *gso.Writer
}

func newBatchWriter(uc *net.UDPConn) *batchWriter {
	return &batchWriter{w: gso.NewWriter(uc)}
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
	if w.w.Len() >= gso.MaxSegments {
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
