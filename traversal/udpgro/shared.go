package udpgro

import (
	"net"
	"sync"

	"golang.org/x/net/ipv4"

	"postern.dev/postern/traversal/udpbatch"
)

// Sockets of which there are many, mostly idle (the relay's relayed
// sockets, one per TURN allocation), cannot each keep bigBuffers coalesced
// buffers of 64 KiB: a relay with thousands of allocations would hold
// gigabytes for nothing. A shared Conn reads with its own recvmmsg
// (readShared) inside the poller's read callback, into buffers it takes
// from a pool shared by every such socket there and gives back there when
// the socket has nothing, before the goroutine parks: the same system calls
// as a plain blocking recvmmsg, and only the sockets that carry traffic at
// that moment hold buffers.

// sharedBuffers is how many coalesced buffers one read of a shared Conn
// fills.
const sharedBuffers = 4

// sharedRead is what one read of a shared Conn fills: the coalesced buffers
// and the system call's headers that point into them.
type sharedRead struct {
	big []ipv4.Message
	mm  mmsgHeaders
}

var sharedBufs = sync.Pool{New: func() any { return newSharedRead() }}

// ForShared is For for one of many mostly idle sockets: its coalesced
// buffers come from a shared pool while datagrams are waiting, and an idle
// socket holds none. Datagrams Next handed out stay valid until the next
// read, as with For.
func ForShared(pc net.PacketConn) *Conn {
	uc := withGRO(pc)
	if uc == nil {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	// No buffers of its own, and no batch reader: readShared reads.
	return &Conn{UDPConn: uc, raw: raw, seg: make([]int, sharedBuffers)}
}

// SharedBatchIO is BatchIO for one of many mostly idle sockets: through a
// shared Conn (ForShared) when pc takes UDP_GRO, else plain recvmmsg
// batches, else nil.
func SharedBatchIO(pc net.PacketConn) udpbatch.BatchIO {
	if g := ForShared(pc); g != nil {
		return g
	}
	return udpbatch.NewBatchIO(pc)
}

// acquire gives a shared Conn buffers from the pool.
func (c *Conn) acquire() {
	if c.sr == nil {
		c.sr = sharedBufs.Get().(*sharedRead)
		c.big = c.sr.big
	}
}

// release gives a shared Conn's buffers back to the pool; what Next handed
// out from them is no longer valid.
func (c *Conn) release() {
	if c.sr == nil {
		return
	}
	sharedBufs.Put(c.sr)
	c.sr, c.big, c.n, c.cur = nil, nil, 0, 0
}
