package udpgro

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"golang.org/x/net/ipv4"

	"postern.dev/postern/traversal/udpbatch"
)

// fakeReader hands out prepared buffers, one call each.
type fakeReader struct {
	bufs  [][]byte
	oobs  [][]byte
	calls int
}

func (f *fakeReader) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	if f.calls >= len(f.bufs) {
		return 0, errors.New("no more")
	}
	m := &ms[0]
	m.N = copy(m.Buffers[0], f.bufs[f.calls])
	m.NN = copy(m.OOB, f.oobs[f.calls])
	m.Addr = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000 + f.calls}
	f.calls++
	return 1, nil
}

func messages(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

func datagram(i, n int) []byte { return bytes.Repeat([]byte{byte(i)}, n) }

// A coalesced buffer comes out as its datagrams, in order, over as many
// calls as the caller's batch needs, and the next read happens only after
// the last one was handed out.
func TestReadBatchSplitsCoalescedBuffers(t *testing.T) {
	var first []byte
	for i := 0; i < 3; i++ {
		first = append(first, datagram(i, 1000)...)
	}
	first = append(first, datagram(3, 500)...) // the last segment may be shorter
	tos := tosMessage(0x02)
	f := &fakeReader{
		bufs: [][]byte{first, datagram(9, 700)},
		oobs: [][]byte{append(append([]byte{}, tos...), groMessage(1000)...), tos},
	}
	c := newConn(nil, f)
	ms := messages(2, 1452)
	var got [][]byte
	var ports []int
	for len(got) < 5 {
		n, err := c.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		for _, m := range ms[:n] {
			got = append(got, append([]byte{}, m.Buffers[0][:m.N]...))
			ports = append(ports, m.Addr.(*net.UDPAddr).Port)
			if !bytes.Equal(m.OOB[:m.NN], tos) {
				t.Errorf("datagram %d: control messages %x, want the TOS message alone %x", len(got)-1, m.OOB[:m.NN], tos)
			}
		}
	}
	want := [][]byte{datagram(0, 1000), datagram(1, 1000), datagram(2, 1000), datagram(3, 500), datagram(9, 700)}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("datagram %d: %d bytes of %d, want %d bytes of %d", i, len(got[i]), got[i][0], len(want[i]), want[i][0])
		}
	}
	if ports[3] != 4000 || ports[4] != 4001 {
		t.Errorf("senders %v: the split datagrams must keep their buffer's sender", ports)
	}
	if f.calls != 2 {
		t.Errorf("%d reads for 2 buffers", f.calls)
	}
}

// Next hands out the datagrams of a coalesced buffer as slices of that
// buffer (no copy), reading again only after the last; a udpbatch.Reader
// over the Conn takes them that way, and its flush hook runs before the
// read and not while datagrams are buffered.
func TestNextHandsOutTheCoalescedBuffer(t *testing.T) {
	var first []byte
	for i := 0; i < 3; i++ {
		first = append(first, datagram(i, 1000)...)
	}
	f := &fakeReader{
		bufs: [][]byte{first, datagram(9, 700)},
		oobs: [][]byte{groMessage(1000), nil},
	}
	c := newConn(nil, f)
	r := udpbatch.NewReader(c, 16)
	flushes := 0
	r.BeforeBlock = func() { flushes++ }
	big := c.big[0].Buffers[0]
	for i := 0; i < 3; i++ {
		d, from, err := r.Next()
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(d, datagram(i, 1000)) || from.(*net.UDPAddr).Port != 4000 {
			t.Fatalf("datagram %d: %d bytes of %d from %s", i, len(d), d[0], from)
		}
		if &d[0] != &big[i*1000] {
			t.Fatalf("datagram %d was copied out of the coalesced buffer", i)
		}
		if f.calls != 1 || flushes != 1 {
			t.Fatalf("datagram %d: %d reads and %d flushes, want 1 and 1", i, f.calls, flushes)
		}
		if want := i < 2; r.Buffered() != want {
			t.Fatalf("after datagram %d: Buffered %v, want %v", i, r.Buffered(), want)
		}
	}
	d, _, err := r.Next()
	if err != nil || !bytes.Equal(d, datagram(9, 700)) || f.calls != 2 || flushes != 2 {
		t.Fatalf("next buffer: %d bytes, %v, %d reads, %d flushes", len(d), err, f.calls, flushes)
	}
	if _, _, err := r.Next(); err == nil {
		t.Fatal("the reader's error was not passed on")
	}
}

// A buffer without a GRO message is one datagram; one longer than the
// caller's buffer is cut to it, and garbage control data does not panic.
func TestReadBatchSingleAndMalformed(t *testing.T) {
	f := &fakeReader{
		bufs: [][]byte{datagram(1, 3000), datagram(2, 100)},
		oobs: [][]byte{nil, {0xff, 0x01, 0x02}},
	}
	c := newConn(nil, f)
	ms := messages(4, 1452)
	n, err := c.ReadBatch(ms, 0)
	if err != nil || n != 1 || ms[0].N != 1452 {
		t.Fatalf("oversized datagram: n=%d err=%v len=%d, want one datagram cut to 1452", n, err, ms[0].N)
	}
	n, err = c.ReadBatch(ms, 0)
	if err != nil || n != 1 || ms[0].N != 100 {
		t.Fatalf("malformed control data: n=%d err=%v len=%d, want the datagram passed on whole", n, err, ms[0].N)
	}
	if _, err := c.ReadBatch(ms, 0); err == nil {
		t.Fatal("the reader's error was not passed on")
	}
}

// The environment variable keeps the socket as it is.
func TestWrapCanBeTurnedOff(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	t.Setenv(DisableEnv, "1")
	if got := Wrap(uc); got != net.PacketConn(uc) {
		t.Fatalf("Wrap with %s=1 returned %T", DisableEnv, got)
	}
}
