package relay

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/traversal/stunguard"
)

// The bypass of pion/turn's request handler on relayed uploads (issue 15).
//
// pion/turn's read loop on the TURN socket handles a client's ChannelData
// one datagram at a time: it decodes it, finds the allocation by its
// five-tuple (a string key built per datagram), looks the channel up under
// the allocation's lock and writes the payload to the channel's peer on the
// allocation's relayed socket. On a relayed upload that handling was a fifth
// of the relay's CPU.
//
// As on the way down (bypass.go), the relay learns pion's decision instead
// of making its own. The read loop hands pion one datagram and pion writes
// what it makes of it before the loop reads again, so a write on the
// relayed socket of the client's own allocation, of the payload's length,
// right after the loop handed pion the client's ChannelData on channel n, is
// that payload going to n's peer. For confirm (one second) after pion last
// did so, the read loop writes the payload of the client's ChannelData on n
// to that peer itself (queued on the relayed socket as pion's writes are,
// counted when sent) and reads on; then the next one goes through pion
// again, and only pion's own write renews the channel. A ChannelBind
// request of the client sends every channel through pion again (the
// bypass's gen, shared with the way down). Revoked clients never get here
// (filterConn drops their datagrams first). Allocations over TLS have no
// bypass.

// upChan is a channel of the client that pion wrote to its peer recently.
type upChan struct {
	num  uint16
	conn *countingConn // the allocation's relayed socket
	peer net.Addr      // as pion names it
	at   time.Time
	gen  uint64
}

// upBypass is a bypass's way from its client to the peers.
type upBypass struct {
	// carried counts the datagrams carried past pion (tests).
	carried atomic.Uint64

	mu    sync.Mutex
	chans []upChan
	// The client's ChannelData handed to pion last, until pion writes its
	// payload (written) or the read loop reads again (settle).
	pending bool
	pendNum uint16
	pendLen int
	pendGen uint64
}

// carryUp writes the payload of the client's ChannelData d to its peer if
// pion did so for the channel within confirm, and reports whether it did;
// otherwise the caller hands d to pion (and calls upHandOff).
func (p *bypass) carryUp(d []byte) bool {
	num, payload, ok := stunguard.ChannelData(d)
	if !ok {
		return false
	}
	gen := p.gen.Load()
	u := &p.up
	u.mu.Lock()
	i := u.find(num)
	if i < 0 || u.chans[i].gen != gen || time.Since(u.chans[i].at) >= p.confirm {
		u.mu.Unlock()
		return false
	}
	c := u.chans[i]
	u.mu.Unlock()
	u.carried.Add(1)
	_, _ = c.conn.write(payload, c.peer) // queued, as pion's write would be
	return true
}

// upHandOff records that the client's datagram d goes to pion.
func (p *bypass) upHandOff(d []byte) {
	num, payload, ok := stunguard.ChannelData(d)
	gen := p.gen.Load()
	u := &p.up
	u.mu.Lock()
	u.pending, u.pendNum, u.pendLen, u.pendGen = ok, num, len(payload), gen
	u.mu.Unlock()
}

// upSettle ends the hand-off: the read loop reads again.
func (p *bypass) upSettle() {
	u := &p.up
	u.mu.Lock()
	u.pending = false
	u.mu.Unlock()
}

// upWritten is told of pion's write of n bytes to peer on conn, the
// relayed socket of this bypass's allocation: the payload of the
// ChannelData handed to pion last when the length matches.
func (p *bypass) upWritten(n int, peer net.Addr, conn *countingConn) {
	u := &p.up
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.pending || n != u.pendLen {
		return
	}
	u.pending = false
	e := upChan{num: u.pendNum, conn: conn, peer: peer, at: time.Now(), gen: u.pendGen}
	u.chans = rememberRecent(u.chans, e, func(x upChan) bool { return x.num == e.num },
		func(x upChan) time.Time { return x.at })
}

func (u *upBypass) find(num uint16) int {
	for i := range u.chans {
		if u.chans[i].num == num {
			return i
		}
	}
	return -1
}
