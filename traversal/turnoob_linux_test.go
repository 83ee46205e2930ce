package traversal

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"postern.dev/postern/internal/testenv"
)

// segmentOOB is the control message quic-go adds to a burst for GSO.
func segmentOOB(size int) []byte {
	body := make([]byte, 2)
	binary.NativeEndian.PutUint16(body, uint16(size))
	return testenv.Cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, body)
}

func TestGSOSegmentOfControlMessages(t *testing.T) {
	tos := testenv.Cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{2})
	for _, c := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"segment size", segmentOOB(1448), 1448},
		{"after an ECN mark", append(append([]byte(nil), tos...), segmentOOB(1200)...), 1200},
		{"ECN mark only", tos, 0},
		{"truncated", segmentOOB(1200)[:5], 0},
		{"garbage", bytes.Repeat([]byte{0xff}, 24), 0},
	} {
		if got := gsoSegment(c.oob); got != c.want {
			t.Errorf("%s: segment size %d, want %d", c.name, got, c.want)
		}
	}
}

// A burst quic-go segments (one buffer, UDP_SEGMENT) leaves the relayed
// socket as one ChannelData datagram per segment, in order, the last one
// shorter; when it is pion's turn the first segment goes through pion and
// the rest take the fast path; a buffer without a segment size (or with
// control data that is not one) is one datagram.
func TestSegmentedBurstsLeaveAsDatagrams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := confirmedFastPath(t, ctx)
	urc := f.al.conn.(*udpRelayPacketConn)
	to := f.peer.LocalAddr().(*net.UDPAddr)
	burst := func(n, last int) ([]byte, [][]byte) {
		var b []byte
		var parts [][]byte
		for i := 1; i <= n; i++ {
			m := f.msg(i)
			if i == n {
				m = m[:last]
			}
			b = append(b, m...)
			parts = append(parts, m)
		}
		return b, parts
	}

	before, bursts := atomicLoad(&f.srv.chanData), urc.fast.bursts.Load()
	b, parts := burst(4, 700)
	if n, _, err := urc.WriteMsgUDP(b, segmentOOB(1200), to); err != nil || n != len(b) {
		t.Fatalf("WriteMsgUDP of a burst: %d, %v", n, err)
	}
	for _, p := range parts {
		f.recv(t, p)
	}
	if got := atomicLoad(&f.srv.chanData) - before; got != 4 {
		t.Fatalf("%d ChannelData datagrams reached the relay, want 4", got)
	}
	if urc.fast.bursts.Load() != bursts+1 {
		t.Fatal("the burst was not queued as one run")
	}

	// pion's turn: the first segment through pion, then the fast path.
	c, _ := urc.fast.route(to)
	c.slowAt.Store(0)
	b, parts = burst(3, 1200)
	if n, _, err := urc.WriteMsgUDP(b, segmentOOB(1200), to); err != nil || n != len(b) {
		t.Fatalf("WriteMsgUDP of a burst on pion's turn: %d, %v", n, err)
	}
	for _, p := range parts {
		f.recv(t, p)
	}
	if x, _ := urc.fast.route(to); x != c {
		t.Fatal("the channel left the fast path after pion's turn")
	}

	// No segment size, or control data that is not one: one datagram (an
	// empty one too).
	for _, c := range []struct {
		oob  []byte
		size int
	}{{nil, 600}, {testenv.Cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{2}), 600}, {nil, 0}} {
		one := f.msg(9)[:c.size]
		if n, _, err := urc.WriteMsgUDP(one, c.oob, to); err != nil || n != len(one) {
			t.Fatalf("WriteMsgUDP of one datagram of %d bytes: %d, %v", c.size, n, err)
		}
		f.recv(t, one)
	}
}
