package connector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"postern.dev/postern/wire"
)

// dgramBufPool holds datagram-sized buffers for UDP and ICMP flows.
var dgramBufPool = sync.Pool{New: func() any { b := make([]byte, wire.MaxDatagram); return &b }}

// idleWatch ends a flow after the idle timeout without traffic either way.
type idleWatch struct {
	last atomic.Int64
}

func (w *idleWatch) touch() { w.last.Store(time.Now().UnixNano()) }

func (w *idleWatch) run(f *flow, idle time.Duration, done <-chan struct{}) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			since := time.Since(time.Unix(0, w.last.Load()))
			if since >= idle {
				f.kill(resultIdle)
				return
			}
			t.Reset(idle - since)
		}
	}
}

// relayDatagrams runs a datagram flow: up gets each datagram the client
// sends until the stream ends (then closeDst ends the other direction), down
// runs the destination -> client direction until it returns; then the flow
// and the destination are closed. Both directions and the idle watch share
// iw.
func (f *flow) relayDatagrams(iw *idleWatch, up func(d []byte), down func(), closeDst func() error) {
	iw.touch()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		iw.run(f, f.s.c.cfg.UDPIdleTimeout, done)
	}()
	go func() { // client -> destination
		defer wg.Done()
		wait := streamWaiter(f.st)
		for {
			if err := wait(); err != nil {
				break
			}
			bp := dgramBufPool.Get().(*[]byte)
			d, err := wire.ReadDatagram(f.st, *bp)
			if err == nil {
				up(d)
			}
			dgramBufPool.Put(bp)
			if err != nil {
				break
			}
		}
		closeDst() // ends the other direction
	}()
	down() // destination -> client
	close(done)
	f.st.Close()
	f.st.CancelRead(quic.StreamErrorCode(wire.CodeFlowIdle))
	closeDst()
	wg.Wait()
}

// spliceUDP relays length-prefixed datagrams between the stream and a
// connected UDP socket until either side ends or the flow is idle.
func (f *flow) spliceUDP(uc net.Conn) {
	var iw idleWatch
	up := func(d []byte) {
		iw.touch()
		if _, werr := uc.Write(d); werr == nil {
			f.up.Add(int64(len(d)))
		}
	}
	down := func() {
		wait := waiterFor(uc)
		for {
			if wait != nil {
				if err := wait(); err != nil {
					break
				}
			}
			bp := dgramBufPool.Get().(*[]byte)
			n, err := uc.Read(*bp)
			if err == nil {
				iw.touch()
				err = wire.WriteDatagram(f.st, (*bp)[:n])
				if err == nil {
					f.down.Add(int64(n))
				}
			}
			dgramBufPool.Put(bp)
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !isRefused(err) {
				break
			}
		}
	}
	f.relayDatagrams(&iw, up, down, uc.Close)
}

// pinger sends ICMP echo requests to one address and reads the replies,
// through an unprivileged ICMP socket where the host allows one
// (net.ipv4.ping_group_range) and a raw socket otherwise (root).
type pinger struct {
	conn       *icmp.PacketConn
	dst        netip.Addr
	privileged bool
	id         int // echo identifier on a raw socket (the kernel picks it otherwise)
}

func newPinger(dst netip.Addr) (*pinger, error) {
	udpNet, rawNet, bind := "udp4", "ip4:icmp", "0.0.0.0"
	if dst.Is6() {
		udpNet, rawNet, bind = "udp6", "ip6:ipv6-icmp", "::"
	}
	if c, err := icmp.ListenPacket(udpNet, bind); err == nil {
		return &pinger{conn: c, dst: dst}, nil
	} else if c2, err2 := icmp.ListenPacket(rawNet, bind); err2 == nil {
		return &pinger{conn: c2, dst: dst, privileged: true, id: rand.IntN(0xffff) + 1}, nil
	} else {
		return nil, fmt.Errorf("no ICMP socket (set net.ipv4.ping_group_range to allow the connector's group): %w", err)
	}
}

func (p *pinger) Close() error { return p.conn.Close() }

func (p *pinger) addr() net.Addr {
	if p.privileged {
		return &net.IPAddr{IP: p.dst.AsSlice(), Zone: p.dst.Zone()}
	}
	return &net.UDPAddr{IP: p.dst.AsSlice(), Zone: p.dst.Zone()}
}

func (p *pinger) send(seq int, data []byte) error {
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if p.dst.Is6() {
		typ = ipv6.ICMPTypeEchoRequest
	}
	m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: data}}
	b, err := m.Marshal(nil)
	if err != nil {
		return err
	}
	_, err = p.conn.WriteTo(b, p.addr())
	return err
}

// recv returns the next echo reply from the destination: its sequence and data.
func (p *pinger) recv(buf []byte) (int, []byte, error) {
	proto := 1
	if p.dst.Is6() {
		proto = 58
	}
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return 0, nil, err
		}
		var src netip.Addr
		switch a := from.(type) {
		case *net.UDPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		case *net.IPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		}
		if src.Unmap() != p.dst.WithZone("") {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		if m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || (p.privileged && e.ID != p.id) {
			continue
		}
		return e.Seq, e.Data, nil
	}
}

// relayICMP answers each echo body the client sends (identifier, sequence,
// data) with the body of the destination's real echo reply.
func (f *flow) relayICMP(p *pinger) {
	var iw idleWatch
	var clientID atomic.Uint32
	up := func(d []byte) {
		if len(d) < 4 {
			return
		}
		iw.touch()
		clientID.Store(uint32(binary.BigEndian.Uint16(d[0:2])))
		if p.send(int(binary.BigEndian.Uint16(d[2:4])), d[4:]) == nil {
			f.up.Add(int64(len(d)))
		}
	}
	down := func() {
		bp := dgramBufPool.Get().(*[]byte)
		out := make([]byte, 0, 64)
		for {
			seq, data, err := p.recv(*bp)
			if err != nil {
				break
			}
			iw.touch()
			out = binary.BigEndian.AppendUint16(out[:0], uint16(clientID.Load()))
			out = binary.BigEndian.AppendUint16(out, uint16(seq))
			out = append(out, data...)
			if err := wire.WriteDatagram(f.st, out); err != nil {
				break
			}
			f.down.Add(int64(len(out)))
		}
		dgramBufPool.Put(bp)
	}
	f.relayDatagrams(&iw, up, down, p.Close)
}
