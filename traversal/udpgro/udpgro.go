// Package udpgro gives quic-go a UDP socket that receives with generic
// receive offload (UDP_GRO, Linux): the kernel hands over a run of
// datagrams of one sender as one buffer, so a QUIC sender's GSO batch (up to
// 64 KiB) crosses the receiver's network stack and the recvmmsg system call
// once instead of once per 1,452-byte packet. quic-go's own reader asks for
// single datagrams (quic-go#3838); it reads through any socket that has a
// ReadBatch method, and Conn is such a socket: it reads coalesced buffers
// and splits them back into the datagrams quic-go expects, each with the
// control messages (ECN, packet info) of the buffer it came from.
//
// Sending is untouched: quic-go's GSO path works on the embedded
// *net.UDPConn as before. Where the kernel refuses UDP_GRO (other systems,
// old kernels), or POSTERN_DISABLE_UDP_GRO is set to a true value (to rule
// it out when chasing a problem, as quic-go's QUIC_GO_DISABLE_GSO does for
// sending), Wrap returns the socket unchanged.
package udpgro

import (
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/net/ipv4"

	"postern.dev/postern/traversal/udpbatch"
)

const (
	// bigBuffers is how many coalesced buffers one system call fills.
	bigBuffers = 8
	// bigSize holds the largest coalesced buffer the kernel builds (64 KiB
	// of UDP payload).
	bigSize = 65535
	// oobSize holds a buffer's control messages: packet info, TOS/TCLASS
	// and the GRO segment size, with room to spare.
	oobSize = 256
)

// DisableEnv names the environment variable that turns GRO off.
const DisableEnv = "POSTERN_DISABLE_UDP_GRO"

// batchReader is what Conn reads coalesced buffers from: an
// *ipv4.PacketConn on the socket, or a fake in tests.
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// Conn is a UDP socket with UDP_GRO on whose ReadBatch returns single
// datagrams. One goroutine reads (quic-go's transport); writes and every
// other method go to the embedded socket.
type Conn struct {
	*net.UDPConn
	r batchReader
	// raw, when set (ForShared), is read directly (readShared): big is
	// sr's, from sharedBufs, only while a read finds datagrams.
	raw syscall.RawConn
	sr  *sharedRead
	big []ipv4.Message
	seg []int // segment size of each filled buffer
	n   int   // buffers filled by the last read
	cur int   // buffer being split
	off int   // offset of the next datagram in big[cur]
}

// Wrap turns UDP_GRO on for uc and returns a Conn around it, or uc itself
// when the kernel does not offer GRO. Pass the result to quic.Transport
// and keep using uc for everything else (closing it closes both).
func Wrap(uc *net.UDPConn) net.PacketConn {
	if c := For(uc); c != nil {
		return c
	}
	return uc
}

// For returns a Conn around pc when pc is a UDP socket that takes UDP_GRO
// (and GRO is not turned off), else nil. Readers that batch datagrams
// themselves take it through BatchIO.
func For(pc net.PacketConn) *Conn {
	uc := withGRO(pc)
	if uc == nil {
		return nil
	}
	return newConn(uc, ipv4.NewPacketConn(uc))
}

// withGRO turns UDP_GRO on for pc and returns it as a UDP socket, or nil
// when pc is no UDP socket, GRO is turned off, or the kernel refused.
func withGRO(pc net.PacketConn) *net.UDPConn {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	if off, _ := strconv.ParseBool(os.Getenv(DisableEnv)); off || !enable(uc) {
		return nil
	}
	return uc
}

// BatchIO returns the batch reads of pc for a reader that batches datagrams
// itself (the relay's TURN socket, the client's TURN allocation): through
// UDP GRO when pc takes it (the far side sends GSO runs), else plain
// recvmmsg batches (udpbatch.NewBatchIO), else nil (one datagram per read).
func BatchIO(pc net.PacketConn) udpbatch.BatchIO {
	if g := For(pc); g != nil {
		return g
	}
	return udpbatch.NewBatchIO(pc)
}

func newConn(uc *net.UDPConn, r batchReader) *Conn {
	return &Conn{UDPConn: uc, r: r, big: newBig(bigBuffers), seg: make([]int, bigBuffers)}
}

// newBig returns n messages with room for a coalesced buffer each.
func newBig(n int) []ipv4.Message {
	big := make([]ipv4.Message, n)
	for i := range big {
		big[i].Buffers = [][]byte{make([]byte, bigSize)}
		big[i].OOB = make([]byte, oobSize)
	}
	return big
}

// ReadBatch fills ms with single datagrams, reading from the socket only
// when every datagram of the last read has been handed out. A datagram
// longer than a message's buffer is cut to it, as the kernel would.
func (c *Conn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	if !c.Buffered() {
		if err := c.fill(flags); err != nil || !c.Buffered() {
			return 0, err
		}
	}
	k := 0
	for ; k < len(ms) && c.Buffered(); k++ {
		src := c.cur
		d, addr := c.take()
		dst := &ms[k]
		dst.N = copy(dst.Buffers[0], d)
		dst.NN = copy(dst.OOB, c.big[src].OOB[:c.big[src].NN])
		dst.Addr = addr
		dst.Flags = 0
	}
	return k, nil
}

// Next returns the next datagram in the coalesced buffers themselves, with
// no copy (udpbatch.Source): it stays valid until Next or ReadBatch reads
// the socket again, which is once every datagram of the last read was
// handed out. Its control messages are not returned.
func (c *Conn) Next(flags int) ([]byte, net.Addr, error) {
	for !c.Buffered() {
		if err := c.fill(flags); err != nil {
			return nil, nil, err
		}
	}
	d, addr := c.take()
	return d, addr, nil
}

// Buffered reports whether a datagram of the last read is still to be
// handed out.
func (c *Conn) Buffered() bool { return c.cur < c.n }

// fill reads coalesced buffers from the socket and notes each one's
// segment size.
func (c *Conn) fill(flags int) error {
	c.n, c.cur = 0, 0
	var n int
	var err error
	if c.raw != nil {
		n, err = c.readShared()
	} else {
		n, err = c.r.ReadBatch(c.big, flags)
	}
	if n == 0 || err != nil {
		c.release()
		return err
	}
	c.n, c.cur, c.off = n, 0, 0
	for i := 0; i < n; i++ {
		m := &c.big[i]
		size, oob := segmentSize(m.OOB[:m.NN])
		m.NN = len(oob) // the GRO message removed: what is left is the datagrams'
		if size <= 0 || size > m.N {
			size = m.N
		}
		c.seg[i] = size
	}
	return nil
}

// take hands out the next datagram of the buffer being split.
func (c *Conn) take() ([]byte, net.Addr) {
	src := &c.big[c.cur]
	end := min(c.off+c.seg[c.cur], src.N)
	d := src.Buffers[0][c.off:end]
	c.off = end
	if c.off >= src.N {
		c.cur++
		c.off = 0
	}
	return d, src.Addr
}
