package udpbatch

import (
	"net"
	"net/netip"
	"runtime"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// SlotSize is the buffer of one datagram in a Reader's batch: a full-size
// ChannelData (4-byte header, 1500-byte payload) fits, as does pion/turn's
// limit for relayed datagrams (1600 bytes).
const SlotSize = 2048

// BatchIO is what ipv4.PacketConn and ipv6.PacketConn offer for reading.
type BatchIO interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// NewBatchIO returns the batch reads of pc, or nil when pc is no UDP socket
// or the platform reads one datagram per call anyway (not Linux).
func NewBatchIO(pc net.PacketConn) BatchIO {
	uc, ok := pc.(*net.UDPConn)
	if !ok || runtime.GOOS != "linux" {
		return nil
	}
	if la, ok := uc.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		return ipv6.NewPacketConn(uc) // IPv6, or dual-stack bound to ::
	}
	return ipv4.NewPacketConn(uc)
}

// Source is a BatchIO that keeps what one read took in buffers of its own
// and hands datagrams out of them (udpgro.Conn splits coalesced buffers): a
// Reader over a Source takes datagrams from it without copying each into a
// slot of its own first.
type Source interface {
	BatchIO
	// Next returns the next datagram, reading the socket when nothing
	// is buffered; it stays valid until Next reads the socket again.
	Next(flags int) ([]byte, net.Addr, error)
	// Buffered reports whether Next has a datagram without reading.
	Buffered() bool
}

// Reader hands out the datagrams of one recvmmsg one by one. It is for one
// reader goroutine.
type Reader struct {
	io         BatchIO
	src        Source // io as a Source, or nil: datagrams go through msgs
	msgs       []ipv4.Message
	next, have int
	// BeforeBlock, if set, runs before a read that may block (all
	// datagrams of the last batch were handed out): a flush of writes
	// queued meanwhile.
	BeforeBlock func()
}

// NewReader returns a reader of io with room for n datagrams per batch (a
// Source keeps them itself).
func NewReader(io BatchIO, n int) *Reader {
	if src, ok := io.(Source); ok {
		return &Reader{io: io, src: src}
	}
	r := &Reader{io: io, msgs: make([]ipv4.Message, n)}
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, SlotSize)}
	}
	return r
}

// ReadFrom copies the next datagram into b, as net.PacketConn.ReadFrom (a
// datagram larger than b is cut to it).
func (r *Reader) ReadFrom(b []byte) (int, net.Addr, error) {
	d, a, err := r.Next()
	if err != nil {
		return 0, nil, err
	}
	return copy(b, d), a, nil
}

// Buffered reports whether Next has a datagram without reading the socket
// (it cannot block).
func (r *Reader) Buffered() bool {
	if r.src != nil {
		return r.src.Buffered()
	}
	return r.next < r.have
}

// Next returns the next datagram in the reader's own buffer (or its
// Source's), without a copy: it is valid until the next call of Next or
// ReadFrom.
func (r *Reader) Next() ([]byte, net.Addr, error) {
	if r.src != nil {
		if r.BeforeBlock != nil && !r.src.Buffered() {
			r.BeforeBlock()
		}
		return r.src.Next(0)
	}
	if r.next == r.have {
		if r.BeforeBlock != nil {
			r.BeforeBlock()
		}
		r.next, r.have = 0, 0
		n, err := r.io.ReadBatch(r.msgs, 0)
		if err != nil {
			return nil, nil, err
		}
		r.have = n
	}
	m := &r.msgs[r.next]
	r.next++
	return m.Buffers[0][:m.N], m.Addr, nil
}

// ReadFrom reads the next datagram through r, or straight from pc when r is
// nil (no batch reads on this socket or platform).
func ReadFrom(r *Reader, pc net.PacketConn, b []byte) (int, net.Addr, error) {
	if r != nil {
		return r.ReadFrom(b)
	}
	return pc.ReadFrom(b)
}

// AddrPortOf returns the address of a UDP peer with an IPv4-mapped IPv6
// address unmapped, so that it compares equal to the plain IPv4 form; ok is
// false when a is no *net.UDPAddr.
func AddrPortOf(a net.Addr) (ap netip.AddrPort, ok bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap = ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
