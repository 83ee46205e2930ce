package udpbatch

import (
	"bytes"
	"fmt"
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
