package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun"

	"postern.dev/postern/traversal/udpbatch"
)

// The bypass of pion/turn's packet handler on relayed downloads (issue 15).
//
// pion/turn reads the relayed socket of every allocation in one goroutine
// (its packet handler): per datagram from a peer it looks the peer's
// channel binding up, frames the datagram as ChannelData in a fresh buffer
// (a copy) and writes that to the TURN socket for the client; with a
// permission but no channel it sends a Data indication, with neither it
// drops the datagram. A profile of a relayed download put the framing and
// the garbage collection of its buffers near a fifth of the relay's CPU.
//
// The bypass learns pion's decisions instead of making its own. The packet
// handler reads one datagram and writes what it makes of it before it
// reads the next, so ChannelData it writes to the client right after a
// read (of the datagram's length) is that datagram framed, and names the
// peer's channel. The relayed socket's reader (countingConn) then frames
// later datagrams of that peer itself, straight into the client's send
// queue (one copy, no allocation), for at most confirm (one second) after
// pion last framed one; then the peer's next datagram goes through pion
// again. A datagram of the peer that pion does not frame as ChannelData
// (the channel expired or was never bound, the allocation is going away)
// takes the peer out of the bypass. A ChannelBind request from the client
// (a new binding or a refresh) sends every peer through pion once more
// before the bypass carries it again, so no channel number is used after
// the relay has read a request that may bind it anew. pion keeps deciding
// everything else (permissions, bindings and their expiry, quotas, the
// allocation's lifetime); the revocation filter is asked for every
// datagram, as filterConn.WriteTo asks for pion's, and bytes and packets
// from peers are counted on read, as before.

const (
	// bypassConfirm is how long pion's framing of a peer's datagram as
	// ChannelData vouches for the peer's later ones.
	bypassConfirm = time.Second
	// maxBypassPeers bounds the peers of one allocation in the bypass; a
	// new one replaces the one pion confirmed longest ago.
	maxBypassPeers = 16
	// channelHeader is the size of a ChannelData header (number, length).
	channelHeader = 4
)

type bypassPeer struct {
	addr netip.AddrPort
	num  uint16    // the channel pion framed the peer's datagram with
	at   time.Time // when
	gen  uint64    // bypass.gen then
}

// bypass is one UDP allocation's way from its peers to its client past
// pion's packet handler. take, handOff and settle run in the packet
// handler's goroutine (inside the relayed socket's ReadFrom), framed and
// rebind in others.
type bypass struct {
	client     netip.AddrPort // unmapped
	clientAddr net.Addr
	w          *batchWriter // the client's ChannelData queue
	blocked    func(net.Addr) bool
	confirm    time.Duration
	// gen counts the client's ChannelBind requests: peers confirmed before
	// the last one go through pion again.
	gen atomic.Uint64
	// taken counts the datagrams the bypass took: carried, or dropped for
	// a revoked client (tests).
	taken atomic.Uint64

	// up is the way from the client to its peers (upbypass.go).
	up upBypass

	mu    sync.Mutex
	peers []bypassPeer
	// The datagram handed to pion last, until pion frames it (framed) or
	// the handler reads again (settle).
	pending  bool
	pendAddr netip.AddrPort
	pendLen  int
	pendGen  uint64
}

func newBypass(client net.Addr, w *batchWriter, blocked func(net.Addr) bool, confirm time.Duration) *bypass {
	ap, _ := udpbatch.AddrPortOf(client)
	return &bypass{client: ap, clientAddr: client, w: w, blocked: blocked, confirm: confirm}
}

// take carries datagram d from peer from to the client if pion framed one
// of the peer's datagrams as ChannelData recently, and reports whether it
// did (a datagram for a revoked client is taken and dropped, as the filter
// would drop pion's). Otherwise the caller hands d to pion.
func (p *bypass) take(d []byte, from net.Addr) bool {
	ap, ok := udpbatch.AddrPortOf(from)
	if !ok {
		return false
	}
	gen := p.gen.Load()
	p.mu.Lock()
	i := p.find(ap)
	if i < 0 || p.peers[i].gen != gen || time.Since(p.peers[i].at) >= p.confirm {
		p.mu.Unlock()
		return false
	}
	num := p.peers[i].num
	p.mu.Unlock()
	p.taken.Add(1)
	if p.blocked(p.clientAddr) {
		return true
	}
	p.w.queueChannelData(num, d, p.client)
	return true
}

// handOff records that datagram d of n bytes from peer from goes to pion.
func (p *bypass) handOff(from net.Addr, n int) {
	ap, ok := udpbatch.AddrPortOf(from)
	gen := p.gen.Load()
	p.mu.Lock()
	p.pending, p.pendAddr, p.pendLen, p.pendGen = ok, ap, n, gen
	p.mu.Unlock()
}

// settle runs when the packet handler reads again: a datagram it was
// handed and did not frame as ChannelData takes its peer out of the bypass.
func (p *bypass) settle() {
	p.mu.Lock()
	if p.pending {
		p.pending = false
		if i := p.find(p.pendAddr); i >= 0 {
			last := len(p.peers) - 1
			p.peers[i] = p.peers[last]
			p.peers = p.peers[:last]
		}
	}
	p.mu.Unlock()
}

// framed is told the ChannelData b pion sends the client: the framing of
// the datagram handed to it last when the length matches (the handler
// writes before it reads again, and only it sends the client ChannelData).
func (p *bypass) framed(b []byte) {
	if len(b) < channelHeader || b[0]&0xC0 != 0x40 {
		return
	}
	num := binary.BigEndian.Uint16(b[:2])
	n := int(binary.BigEndian.Uint16(b[2:4]))
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.pending || n != p.pendLen || channelHeader+n > len(b) {
		return
	}
	p.pending = false
	e := bypassPeer{addr: p.pendAddr, num: num, at: time.Now(), gen: p.pendGen}
	p.peers = rememberRecent(p.peers, e, func(x bypassPeer) bool { return x.addr == e.addr },
		func(x bypassPeer) time.Time { return x.at })
}

// rememberRecent puts e into list in place of the entry same picks, else
// appended while list holds fewer than maxBypassPeers, else in place of
// the entry pion confirmed longest ago (at).
func rememberRecent[T any](list []T, e T, same func(T) bool, at func(T) time.Time) []T {
	oldest := -1
	for i := range list {
		if same(list[i]) {
			list[i] = e
			return list
		}
		if oldest < 0 || at(list[i]).Before(at(list[oldest])) {
			oldest = i
		}
	}
	if len(list) < maxBypassPeers {
		return append(list, e)
	}
	list[oldest] = e
	return list
}

// rebind sends every peer through pion again (the client asked for a
// channel binding).
func (p *bypass) rebind() { p.gen.Add(1) }

func (p *bypass) find(ap netip.AddrPort) int {
	for i := range p.peers {
		if p.peers[i].addr == ap {
			return i
		}
	}
	return -1
}

// queueChannelData queues payload framed as ChannelData on channel num for
// to, padded to a multiple of four bytes as pion/turn frames it. A full
// queue is sent first.
func (w *batchWriter) queueChannelData(num uint16, payload []byte, to netip.AddrPort) {
	var hdr [channelHeader]byte
	binary.BigEndian.PutUint16(hdr[:2], num)
	binary.BigEndian.PutUint16(hdr[2:], uint16(len(payload)))
	pad := (4 - len(payload)%4) % 4
	w.mu.Lock()
	if w.w.Len() >= udpbatch.MaxSegments {
		_ = w.w.Flush()
	}
	w.w.AppendPadded(hdr[:], payload, pad, to)
	w.mu.Unlock()
}

// isChannelBind reports whether b is a STUN ChannelBind request.
func isChannelBind(b []byte) bool {
	return len(b) >= 2 && b[0] == 0x00 && b[1] == 0x09 && stun.IsMessage(b)
}
