package traversal

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun"
	"golang.org/x/net/ipv4"

	"postern.dev/postern/traversal/stunguard"
	"postern.dev/postern/traversal/udpbatch"
	"postern.dev/postern/traversal/udpgro"
)

// The client's receive path through a TURN allocation over UDP.
//
// pion/turn's client reads its socket in a goroutine of its own and, per
// ChannelData datagram, copies it twice into fresh buffers and queues it on
// a channel that the relayed socket's ReadFrom copies from once more: on a
// download through the relay that loop and its copies were about 7% of the
// client's CPU, and every datagram changed goroutine on the way to quic-go.
//
// turnReceiver reads the socket itself, in batches (recvmmsg), and in the
// goroutine that asks for data (quic-go's reader): ChannelData from the
// relay on a channel pion bound, and Data indications, go straight to
// quic-go (one copy, from the batch into quic-go's buffer); STUN messages
// (responses to allocations, refreshes, permissions, channel bindings) go to
// pion's HandleInbound, so pion manages the allocation as before. Garbage,
// truncated ChannelData and channels pion does not have are dropped and
// counted (pion's own loop stopped reading at the first datagram it could
// not handle).
//
// quic-go reads only once its transport runs, and pion needs its responses
// before that (allocation, permissions) and whenever quic-go stops reading.
// So a pump goroutine reads whenever quic-go's reader is absent: until the
// first ReadFrom, and afterwards when no ReadFrom was running or returned for
// pumpIdle. What it reads for quic-go waits in a queue that ReadFrom empties
// first. One goroutine at a time reads the socket (rmu).

const (
	// pumpIdle is how long quic-go's reader may be away before the pump
	// reads for pion (pion retransmits a request after 200 ms, and gives up
	// after seconds).
	pumpIdle = 500 * time.Millisecond
	// pumpQueue is how many datagrams the pump keeps for quic-go.
	pumpQueue = 256
	// readErrMax is how many read errors in a row (other than a deadline or
	// a closed socket) ReadFrom skips before it reports one.
	readErrMax = 64
)

// recvCounts are a receiver's counters of what it read (tests, diagnosis).
type recvCounts struct {
	fast      atomic.Uint64 // ChannelData and Data indications to quic-go
	pion      atomic.Uint64 // STUN messages to pion
	pionErr   atomic.Uint64 // of which pion refused (malformed, unknown transaction)
	unknown   atomic.Uint64 // ChannelData on a channel pion does not have
	malformed atomic.Uint64 // truncated ChannelData, bad Data indications
	foreign   atomic.Uint64 // ChannelData or data not from the relay
	other     atomic.Uint64 // neither STUN nor ChannelData
	tooLarge  atomic.Uint64 // payload larger than quic-go's buffer
	queueFull atomic.Uint64 // read by the pump while quic-go's queue was full
}

// inbound is a datagram the pump read for quic-go.
type inbound struct {
	b    []byte
	from *net.UDPAddr
}

// turnReceiver reads the base UDP socket of one allocation.
type turnReceiver struct {
	f *turnFastPath
	// handle is pion's Client.HandleInbound.
	handle func([]byte, net.Addr) (bool, error)

	rmu  sync.Mutex // held while reading the socket and handling a datagram
	rd   *udpbatch.Reader
	conn net.PacketConn // rd == nil: one datagram per read into buf
	buf  []byte

	queue    chan inbound
	attached atomic.Bool   // quic-go's reader has read
	inRead   atomic.Int32  // ReadFrom calls running
	reads    atomic.Uint64 // ReadFrom calls returned
	msg      stun.Message  // decodes Data indications (under rmu)

	n recvCounts
}

// newTurnReceiver returns the receiver of conn for the fast path f.
func newTurnReceiver(conn net.PacketConn, f *turnFastPath) *turnReceiver {
	r := &turnReceiver{f: f, conn: conn, queue: make(chan inbound, pumpQueue)}
	if bio := udpgro.BatchIO(conn); bio != nil {
		r.rd = udpbatch.NewReader(bio, clientBatch) // GRO: the relay sends GSO runs
	} else {
		r.buf = make([]byte, udpbatch.SlotSize)
	}
	return r
}

// clientBatch is how many datagrams one read on a TURN client's socket takes.
const clientBatch = 16

// start hands what is not for quic-go to handle (pion's HandleInbound) and
// starts the pump; it runs until the socket is closed.
func (r *turnReceiver) start(handle func([]byte, net.Addr) (bool, error)) {
	r.handle = handle
	go r.pump()
}

// next reads the next datagram (under rmu); it is valid until the next call.
func (r *turnReceiver) next() ([]byte, net.Addr, error) {
	if r.rd != nil {
		return r.rd.Next()
	}
	n, a, err := r.conn.ReadFrom(r.buf)
	return r.buf[:n], a, err
}

// ReadFrom is the relayed socket's read, one datagram per call (quic-go
// reads through ReadBatch; this is the plain net.PacketConn read).
func (r *turnReceiver) ReadFrom(b []byte) (int, net.Addr, error) {
	ms := [1]ipv4.Message{{Buffers: [][]byte{b}}}
	if _, err := r.ReadBatch(ms[:]); err != nil {
		return 0, nil, err
	}
	return ms[0].N, ms[0].Addr, nil
}

// ReadBatch is quic-go's read: it waits for the first datagram for quic-go
// and adds, without waiting again, those the last socket read left (a GRO
// run of the relay is one read); each message gets one datagram in
// Buffers[0] (N) and its peer (Addr), and no control messages.
func (r *turnReceiver) ReadBatch(ms []ipv4.Message) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	if !r.attached.Load() {
		r.attached.Store(true)
	}
	r.inRead.Add(1)
	defer func() {
		r.inRead.Add(-1)
		r.reads.Add(1)
	}()
	for errs := 0; ; {
		if k := r.pop(ms); k > 0 {
			return k, nil
		}
		r.rmu.Lock()
		// The pump may have queued something while this waited for rmu.
		if k := r.pop(ms); k > 0 {
			r.rmu.Unlock()
			return k, nil
		}
		d, from, err := r.next()
		if err != nil {
			r.rmu.Unlock()
			if errs++; errs >= readErrMax || udpbatch.ErrClosed(err) || errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, err
			}
			continue
		}
		errs = 0
		k := r.deliver(&ms[0], d, from)
		for k < len(ms) && r.buffered() {
			if d, from, err = r.next(); err != nil {
				break // cannot happen without a read; the next call sees it
			}
			k += r.deliver(&ms[k], d, from)
		}
		r.rmu.Unlock()
		if k > 0 {
			return k, nil
		}
	}
}

// deliver puts what datagram d from the socket carries for quic-go into m
// (under rmu) and returns 1, or 0 when d went to pion or was dropped.
func (r *turnReceiver) deliver(m *ipv4.Message, d []byte, from net.Addr) int {
	p, peer := r.dispatch(d, from)
	if p == nil {
		return 0
	}
	return r.put(m, p, peer)
}

// put copies datagram p of peer into m and returns 1, or 0 when it does not
// fit. Every address the receiver hands out is a *net.UDPAddr, the type
// quic-go's UDP path needs for the addresses it writes back to.
func (r *turnReceiver) put(m *ipv4.Message, p []byte, peer *net.UDPAddr) int {
	if len(p) > len(m.Buffers[0]) {
		r.n.tooLarge.Add(1)
		return 0
	}
	m.N, m.NN, m.Flags, m.Addr = copy(m.Buffers[0], p), 0, 0, peer
	return 1
}

// buffered reports whether next returns a datagram without reading the
// socket (under rmu).
func (r *turnReceiver) buffered() bool { return r.rd != nil && r.rd.Buffered() }

// pop moves datagrams the pump queued into ms.
func (r *turnReceiver) pop(ms []ipv4.Message) int {
	k := 0
	for k < len(ms) {
		select {
		case in := <-r.queue:
			k += r.put(&ms[k], in.b, in.from)
		default:
			return k
		}
	}
	return k
}

// readerAway reports whether quic-go's reader is absent: it never read, or
// no ReadFrom runs now and none returned since the last check (seen).
func (r *turnReceiver) readerAway(seen *uint64) bool {
	if !r.attached.Load() {
		return true
	}
	n := r.reads.Load()
	away := r.inRead.Load() == 0 && n == *seen
	*seen = n
	return away
}

// pump reads the socket while quic-go's reader is away.
func (r *turnReceiver) pump() {
	t := time.NewTimer(pumpIdle)
	defer t.Stop()
	wait := func() bool {
		t.Reset(pumpIdle)
		select {
		case <-t.C:
			return true
		case <-r.f.done:
			return false
		}
	}
	var seen uint64
	for {
		if !r.readerAway(&seen) {
			if !wait() {
				return
			}
			continue
		}
		r.rmu.Lock()
		d, from, err := r.next()
		if err != nil {
			r.rmu.Unlock()
			if udpbatch.ErrClosed(err) {
				return
			}
			// A deadline quic-go set to stop its reader, or a
			// transient error: look again later.
			if !wait() {
				return
			}
			continue
		}
		if p, peer := r.dispatch(d, from); p != nil {
			// Queued before rmu is released: a ReadFrom waiting for rmu
			// looks at the queue before it reads the socket.
			select {
			case r.queue <- inbound{b: append([]byte(nil), p...), from: peer}:
			default:
				r.n.queueFull.Add(1)
			}
		}
		r.rmu.Unlock()
	}
}

// dispatch handles datagram d from the socket (under rmu): it returns the
// payload for quic-go and its peer, or nil when d went to pion or was
// dropped.
func (r *turnReceiver) dispatch(d []byte, from net.Addr) ([]byte, *net.UDPAddr) {
	switch {
	case len(d) >= 1 && d[0]&0xC0 == 0x40:
		return r.channelData(d, from)
	case len(d) >= 1 && d[0]&0xC0 == 0 && stun.IsMessage(d):
		if stunguard.Check(d) != nil {
			// pion/stun would panic on some of these (see stunguard).
			r.n.malformed.Add(1)
			return nil, nil
		}
		if isDataIndication(d) {
			return r.dataIndication(d, from)
		}
		r.n.pion.Add(1)
		if r.handle != nil {
			if _, err := r.handle(d, from); err != nil {
				r.n.pionErr.Add(1)
			}
		}
		return nil, nil
	default:
		r.n.other.Add(1)
		return nil, nil
	}
}

// fromRelay reports whether a datagram came from the relay.
func (r *turnReceiver) fromRelay(from net.Addr) bool {
	ap, ok := udpbatch.AddrPortOf(from)
	return ok && ap == r.f.server
}

func (r *turnReceiver) channelData(d []byte, from net.Addr) ([]byte, *net.UDPAddr) {
	num, p, ok := stunguard.ChannelData(d)
	if !ok {
		r.n.malformed.Add(1)
		return nil, nil
	}
	if !r.fromRelay(from) {
		r.n.foreign.Add(1)
		return nil, nil
	}
	c := r.f.channel(num)
	if c == nil {
		r.n.unknown.Add(1)
		return nil, nil
	}
	r.n.fast.Add(1)
	return p, c.addr
}

// isDataIndication reports whether STUN message d is a Data indication
// (method Data, class indication: type 0x0017).
func isDataIndication(d []byte) bool {
	return len(d) >= 2 && d[0] == 0x00 && d[1] == 0x17
}

// dataIndication returns the data and peer of a Data indication from the
// relay (it carries data from a peer with a permission but no channel yet).
func (r *turnReceiver) dataIndication(d []byte, from net.Addr) ([]byte, *net.UDPAddr) {
	if !r.fromRelay(from) {
		r.n.foreign.Add(1)
		return nil, nil
	}
	m := &r.msg
	m.Reset()
	m.Raw = append(m.Raw[:0], d...)
	var peer stun.XORMappedAddress
	if err := m.Decode(); err != nil {
		r.n.malformed.Add(1)
		return nil, nil
	}
	if err := peer.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
		r.n.malformed.Add(1)
		return nil, nil
	}
	data, err := m.Get(stun.AttrData)
	if err != nil {
		r.n.malformed.Add(1)
		return nil, nil
	}
	r.n.fast.Add(1)
	return data, &net.UDPAddr{IP: peer.IP, Port: peer.Port}
}
