package traversal

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/traversal/udpbatch"
)

// The client's fast path through a TURN allocation over UDP.
//
// pion/turn's relayed socket sends every packet on its own: per packet it
// looks up the permission and the channel binding, builds a new ChannelData
// buffer and makes one sendto, and quic-go, which sees that socket and not
// a UDP one, cannot segment its bursts. For a bulk flow through the relay
// that sendto was a third of the client's CPU.
//
// The fast path takes over once pion's channel binding to a peer is in use
// at the relay (the relay sent ChannelData on that channel, so it is bound):
// QUIC packets to that peer get the 4-byte ChannelData header and are
// queued; a sender goroutine sends what has queued meanwhile, runs of equal
// size as one GSO sendmsg (traversal/udpbatch). Everything else stays with pion:
// allocation, permissions, binding and their refreshes, and data to peers
// with no confirmed channel. So that pion keeps refreshing a binding it no
// longer sees used, one packet per peer and second still goes through it,
// and the fast path drops a channel pion no longer has.

const (
	// slowEvery is how often a packet to a peer on the fast path goes
	// through pion instead (pion refreshes bindings from its WriteTo).
	slowEvery = time.Second
	// channelHeader is the size of a ChannelData header (RFC 8656 12.4).
	channelHeader = 4
	// pendingMax is how many packets queue before a writer waits for the
	// sender.
	pendingMax = udpbatch.MaxSegments
)

// fastChan is a confirmed channel binding to one peer.
type fastChan struct {
	num  uint16
	peer netip.AddrPort
	// addr is the peer as pion names it, handed to quic-go with every
	// datagram received on the channel (quic-go's UDP path needs this
	// type for the addresses it writes back to).
	addr   *net.UDPAddr
	slowAt atomic.Int64 // unix nanoseconds of the next packet through pion
}

// turnFastPath sends ChannelData on the base UDP socket of one allocation.
type turnFastPath struct {
	server netip.AddrPort
	// lookup is pion's FindAddrByChannelNumber of the relayed socket, set
	// once the allocation exists.
	lookup atomic.Pointer[func(uint16) (net.Addr, bool)]
	// chans maps peers to confirmed channels; byNum the other way. Both
	// are replaced, never changed, under cmu.
	cmu   sync.Mutex
	chans atomic.Pointer[map[netip.AddrPort]*fastChan]
	byNum atomic.Pointer[map[uint16]*fastChan]

	// pending holds queued packets (under mu); the sender swaps it with
	// spare and sends spare (under smu).
	mu      sync.Mutex
	pending *udpbatch.Writer
	smu     sync.Mutex
	spare   *udpbatch.Writer
	kick    chan struct{}
	done    chan struct{}
	once    sync.Once
	// largest is the largest datagram queued (tests: path MTU discovery
	// on the relayed path).
	largest atomic.Int64
	// bursts counts the runs of more than one datagram queued at once
	// (tests: quic-go segments its bursts for the relayed socket).
	bursts atomic.Int64
}

// newTurnFastPath returns the fast path over conn (the allocation's socket to
// the relay) and starts its sender. The caller sets server (the address
// pion's client sends to) before the first datagram is read.
func newTurnFastPath(conn *net.UDPConn) *turnFastPath {
	f := &turnFastPath{
		pending: udpbatch.NewWriter(conn),
		spare:   udpbatch.NewWriter(conn),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	f.chans.Store(&map[netip.AddrPort]*fastChan{})
	f.byNum.Store(&map[uint16]*fastChan{})
	go f.sender()
	return f
}

func (f *turnFastPath) setLookup(fn func(uint16) (net.Addr, bool)) { f.lookup.Store(&fn) }

// gso reports whether the socket to the relay takes segmented bursts.
func (f *turnFastPath) gso() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending.GSO()
}

func (f *turnFastPath) close() { f.once.Do(func() { close(f.done) }) }

// channel returns the channel num of a ChannelData datagram from the relay:
// the confirmed one, or the one pion bound, which this confirms (the relay
// used it, so the binding exists there too); nil when pion has no such
// channel.
func (f *turnFastPath) channel(num uint16) *fastChan {
	if c := (*f.byNum.Load())[num]; c != nil {
		return c
	}
	lp := f.lookup.Load()
	if lp == nil {
		return nil
	}
	peerAddr, ok := (*lp)(num)
	if !ok {
		return nil
	}
	ua, ok := peerAddr.(*net.UDPAddr) // pion's peers are UDP addresses
	if !ok {
		return nil
	}
	peer, _ := udpbatch.AddrPortOf(ua)
	f.cmu.Lock()
	defer f.cmu.Unlock()
	if c := (*f.byNum.Load())[num]; c != nil {
		return c // confirmed meanwhile
	}
	chans, byNum := copyChans(*f.chans.Load())
	if old := chans[peer]; old != nil {
		delete(byNum, old.num)
	}
	c := &fastChan{num: num, peer: peer, addr: ua}
	c.slowAt.Store(time.Now().Add(slowEvery).UnixNano())
	chans[peer] = c
	byNum[num] = c
	f.chans.Store(&chans)
	f.byNum.Store(&byNum)
	return c
}

func copyChans(m map[netip.AddrPort]*fastChan) (map[netip.AddrPort]*fastChan, map[uint16]*fastChan) {
	chans := make(map[netip.AddrPort]*fastChan, len(m)+1)
	byNum := make(map[uint16]*fastChan, len(m)+1)
	for k, v := range m {
		chans[k] = v
		byNum[v.num] = v
	}
	return chans, byNum
}

// forget drops the channel of c (pion no longer has it).
func (f *turnFastPath) forget(c *fastChan) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	chans, byNum := copyChans(*f.chans.Load())
	if chans[c.peer] == c {
		delete(chans, c.peer)
		delete(byNum, c.num)
	}
	f.chans.Store(&chans)
	f.byNum.Store(&byNum)
}

// route returns the confirmed channel to send b to peer on, or nil when
// this packet must go through pion (no confirmed channel, or its turn to
// keep pion's binding refreshed; then check reports, after pion sent it,
// whether pion still has the channel).
func (f *turnFastPath) route(peer net.Addr) (*fastChan, func()) {
	ap, ok := udpbatch.AddrPortOf(peer)
	if !ok {
		return nil, nil
	}
	c := (*f.chans.Load())[ap]
	if c == nil {
		return nil, nil
	}
	now := time.Now().UnixNano()
	if at := c.slowAt.Load(); now >= at && c.slowAt.CompareAndSwap(at, now+int64(slowEvery)) {
		return nil, func() {
			lp := f.lookup.Load()
			if lp == nil {
				return
			}
			if a, ok := (*lp)(c.num); !ok {
				f.forget(c)
			} else if x, ok := udpbatch.AddrPortOf(a); !ok || x != c.peer {
				f.forget(c)
			}
		}
	}
	return c, nil
}

// send queues b as ChannelData on channel c.
func (f *turnFastPath) send(c *fastChan, b []byte) { f.sendRun(c, b, len(b)) }

// sendRun queues b as ChannelData on channel c, cut into datagrams of seg
// bytes (the last may be shorter): a burst quic-go segments itself.
func (f *turnFastPath) sendRun(c *fastChan, b []byte, seg int) {
	if seg <= 0 {
		seg = len(b)
	}
	if len(b) > seg {
		f.bursts.Add(1)
	}
	if n := int64(channelHeader + min(seg, len(b))); n > f.largest.Load() {
		f.largest.Store(n) // one writer: quic-go's send loop
	}
	var hdr [channelHeader]byte
	binary.BigEndian.PutUint16(hdr[:2], c.num)
	f.mu.Lock()
	first := f.pending.Len() == 0
	for {
		d := b[:min(seg, len(b))] // an empty b is one empty datagram
		b = b[len(d):]
		if f.pending.Len() >= pendingMax {
			// The sender is behind: send the queue from here.
			f.mu.Unlock()
			f.flush()
			f.mu.Lock()
			first = f.pending.Len() == 0
		}
		binary.BigEndian.PutUint16(hdr[2:], uint16(len(d)))
		f.pending.Append(hdr[:], d, f.server)
		if len(b) == 0 {
			break
		}
	}
	f.mu.Unlock()
	if first {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// flush sends what is queued now.
func (f *turnFastPath) flush() {
	f.smu.Lock()
	defer f.smu.Unlock()
	f.mu.Lock()
	f.pending, f.spare = f.spare, f.pending
	f.mu.Unlock()
	// Errors drop the packets, as a lossy link would (relayPacketConn).
	_ = f.spare.Flush()
}

func (f *turnFastPath) sender() {
	for {
		select {
		case <-f.kick:
			f.flush()
		case <-f.done:
			return
		}
	}
}
