// Package udpbatch moves UDP datagrams in few system calls. Writer sends
// runs of datagrams to one address of one size (the last may be shorter) as
// one sendmsg with UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18
// and later), so the kernel walks its stack (routing, netfilter, the device)
// once per run instead of once per datagram; where GSO is missing or the
// device refuses it, every datagram is sent on its own, as before. Reader
// takes every datagram waiting in a socket with one recvmmsg and hands them
// out one by one.
//
// The relay's data path and the client's leg through a TURN allocation use
// it: quic-go batches its own sockets this way, but not a socket it sees
// through a TURN client.
package udpbatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

const (
	// MaxSegments is the most datagrams one sendmsg carries (the kernel's
	// UDP_MAX_SEGMENTS).
	MaxSegments = 64
	// maxRunBytes bounds the bytes of one run (a UDP datagram, before
	// segmentation, carries at most 65,507).
	maxRunBytes = 65000
)

// Writer queues datagrams for one UDP socket and sends them on Flush. It is
// not safe for concurrent use.
type Writer struct {
	// Sent, if set, is told after every system call how many datagrams
	// and bytes of the queue the kernel took (metrics count what left,
	// not what was queued).
	Sent func(datagrams, bytes int)

	conn *net.UDPConn
	gso  bool
	buf  []byte
	segs []seg
	oob  []byte
}

type seg struct {
	off, n int
	to     netip.AddrPort
}

// NewWriter returns a writer for conn; it uses GSO when conn supports it.
func NewWriter(conn *net.UDPConn) *Writer {
	// The queue grows with the largest batch it has held.
	return &Writer{conn: conn, gso: supported(conn)}
}

// Conn is the socket the writer sends on.
func (w *Writer) Conn() *net.UDPConn { return w.conn }

// GSO reports whether the writer segments runs in the kernel.
func (w *Writer) GSO() bool { return w.gso }

// Len is the number of queued datagrams.
func (w *Writer) Len() int { return len(w.segs) }

// Append queues one datagram made of hdr followed by payload (hdr may be
// empty) for to. The caller flushes when Len reaches MaxSegments.
func (w *Writer) Append(hdr, payload []byte, to netip.AddrPort) {
	w.AppendPadded(hdr, payload, 0, to)
}

// AppendPadded is Append with pad zero bytes after payload (TURN pads
// ChannelData to a multiple of four bytes).
func (w *Writer) AppendPadded(hdr, payload []byte, pad int, to netip.AddrPort) {
	off := len(w.buf)
	w.buf = append(w.buf, hdr...)
	w.buf = append(w.buf, payload...)
	for range pad {
		w.buf = append(w.buf, 0)
	}
	w.segs = append(w.segs, seg{off: off, n: len(hdr) + len(payload) + pad, to: to})
}

// Flush sends every queued datagram and empties the queue. A datagram the
// kernel refuses is dropped, as a lossy link would; the first error is
// returned.
func (w *Writer) Flush() error {
	var first error
	for i := 0; i < len(w.segs); {
		j := w.run(i)
		if err := w.send(i, j); err != nil && first == nil {
			first = err
		}
		i = j
	}
	w.buf, w.segs = w.buf[:0], w.segs[:0]
	return first
}

// run returns the end of the run that starts at segment i: the segments
// after it that go to the same address with the same size, and at most one
// shorter one that ends it.
func (w *Writer) run(i int) int {
	if !w.gso {
		return i + 1
	}
	s := w.segs[i]
	total := s.n
	j := i + 1
	for j < len(w.segs) && j-i < MaxSegments {
		x := w.segs[j]
		if x.to != s.to || x.n > s.n || total+x.n > maxRunBytes {
			break
		}
		total += x.n
		j++
		if x.n < s.n {
			break
		}
	}
	return j
}

// send writes segments [i, j), one run.
func (w *Writer) send(i, j int) error {
	s := w.segs[i]
	if j-i == 1 {
		return w.write(w.buf[s.off:s.off+s.n], s.to)
	}
	last := w.segs[j-1]
	b := w.buf[s.off : last.off+last.n]
	w.oob = segmentSizeMsg(w.oob[:0], uint16(s.n))
	_, _, err := w.conn.WriteMsgUDPAddrPort(b, w.oob, s.to)
	if err == nil {
		w.sent(j-i, len(b))
		return nil
	}
	if noGSO, tooLarge := isGSOError(err); noGSO || tooLarge {
		// The device cannot segment (send this run and all later ones
		// datagram by datagram), or the segments do not fit the route's
		// MTU (send this run datagram by datagram: each fails or not on
		// its own, as a probe for a larger path MTU must).
		if noGSO {
			w.gso = false
		}
		var first error
		for k := i; k < j; k++ {
			x := w.segs[k]
			if err := w.write(w.buf[x.off:x.off+x.n], x.to); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	return fmt.Errorf("send %d datagrams to %s: %w", j-i, s.to, err)
}

func (w *Writer) write(b []byte, to netip.AddrPort) error {
	if _, err := w.conn.WriteToUDPAddrPort(b, to); err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	w.sent(1, len(b))
	return nil
}

func (w *Writer) sent(datagrams, bytes int) {
	if w.Sent != nil {
		w.Sent(datagrams, bytes)
	}
}

// ErrClosed reports whether err comes from a closed socket.
func ErrClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
