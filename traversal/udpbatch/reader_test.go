package udpbatch

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// countingIO counts the system calls of a BatchIO.
type countingIO struct {
	BatchIO
	reads atomic.Int32
}

func (c *countingIO) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	c.reads.Add(1)
	return c.BatchIO.ReadBatch(ms, flags)
}

// Datagrams waiting in the socket come out of one recvmmsg, one per
// ReadFrom, intact and with their source; the flush hook runs before every
// read that may block, and only then.
func TestBatchReaderTakesQueuedDatagramsInOneRead(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("batched reads are Linux only")
	}
	sock, src := listen(t), listen(t)
	bio := NewBatchIO(sock)
	if bio == nil {
		t.Fatal("no batch I/O for a UDP socket on Linux")
	}
	cio := &countingIO{BatchIO: bio}
	r := NewReader(cio, 32)
	var flushes atomic.Int32
	r.BeforeBlock = func() { flushes.Add(1) }
	// Loopback delivers before sendto returns: all five are queued.
	for i := 0; i < 5; i++ {
		if _, err := src.WriteTo([]byte(fmt.Sprintf("datagram %d", i)), sock.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1600)
	for i := 0; i < 5; i++ {
		n, from, err := r.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("datagram %d", i); string(buf[:n]) != want {
			t.Fatalf("read %q, want %q", buf[:n], want)
		}
		if from.String() != src.LocalAddr().String() {
			t.Fatalf("from %s, want %s", from, src.LocalAddr())
		}
	}
	if got := cio.reads.Load(); got != 1 {
		t.Fatalf("%d recvmmsg calls for 5 queued datagrams, want 1", got)
	}
	if got := flushes.Load(); got != 1 {
		t.Fatalf("flush hook ran %d times before the first read, want 1", got)
	}
	// The next read would block: the hook runs first.
	_ = sock.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := r.ReadFrom(buf); err == nil {
		t.Fatal("read from an empty socket returned a datagram")
	}
	if got := flushes.Load(); got != 2 {
		t.Fatalf("flush hook ran %d times, want 2", got)
	}
	// A datagram larger than the caller's buffer is cut to it, as
	// ReadFrom on a UDP socket would.
	_ = sock.SetReadDeadline(time.Time{})
	if _, err := src.WriteTo(bytes.Repeat([]byte{7}, 1500), sock.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if n, _, err := r.ReadFrom(buf[:100]); err != nil || n != 100 {
		t.Fatalf("read %d, %v; want 100 bytes", n, err)
	}
}

func TestAddrPortOfUnmapsIPv4(t *testing.T) {
	mapped := &net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 3478} // 16-byte form
	ap, ok := AddrPortOf(mapped)
	if !ok || ap != netip.MustParseAddrPort("192.0.2.7:3478") {
		t.Fatalf("AddrPortOf(%v) = %v, %v; want 192.0.2.7:3478, true", mapped, ap, ok)
	}
	if _, ok := AddrPortOf(&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}); ok {
		t.Fatal("AddrPortOf accepted a TCP address")
	}
}

func TestReadFromWithoutBatchReadsTheSocket(t *testing.T) {
	a, b := listen(t), listen(t)
	if _, err := b.WriteToUDPAddrPort([]byte("hi"), addrOf(a)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := ReadFrom(nil, a, buf)
	if err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("ReadFrom = %q, %v", buf[:n], err)
	}
	if ap, _ := AddrPortOf(from); ap.Port() != addrOf(b).Port() {
		t.Fatalf("ReadFrom came from %v, want port %d", from, addrOf(b).Port())
	}
}
