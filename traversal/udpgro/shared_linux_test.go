package udpgro

import (
	"bytes"
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"postern.dev/postern/traversal/udpbatch"
)

// A shared Conn holds no coalesced buffer while its socket is idle: not
// before the first datagram, and not while it waits for the next one after
// handing out a GSO run (coalesced, byte for byte, with its sender); a
// deadline and a close end the wait as they end a read.
func TestSharedConnHoldsBuffersOnlyWhileDatagramsWait(t *testing.T) {
	rx, tx := listen(t), listen(t)
	c := ForShared(rx)
	if c == nil {
		t.Fatal("no shared GRO reader for a UDP socket on Linux")
	}
	if c.big != nil || c.r != nil {
		t.Fatal("an idle shared socket holds coalesced buffers or a batch reader")
	}
	if n := testing.AllocsPerRun(10, func() { ForShared(rx) }); n > 8 {
		t.Fatalf("ForShared allocates %v times", n)
	}
	if b := allocBytes(func() { ForShared(rx) }); b > 4096 {
		t.Fatalf("ForShared allocates %d bytes: buffers made and dropped", b)
	}
	w := udpbatch.NewWriter(tx)
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	const count, size = 20, 1200
	var want [][]byte
	for i := 0; i < count; i++ {
		p := datagram(i, size)
		want = append(want, p)
		w.Append(nil, p, to)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := udpbatch.NewReader(c, 16)
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range want {
		d, from, err := r.Next()
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(d, want[i]) || from.String() != tx.LocalAddr().String() {
			t.Fatalf("datagram %d: %d bytes from %s, want %d from %s", i, len(d), from, len(want[i]), tx.LocalAddr())
		}
		if c.big == nil {
			t.Fatalf("datagram %d handed out with no buffer held", i)
		}
	}
	// Nothing waits: the next read gives the buffers back, then waits
	// until the deadline.
	_ = rx.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := r.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of an idle socket: %v, want a timeout", err)
	}
	if c.big != nil {
		t.Fatal("buffers held while waiting for a datagram")
	}
	// Waiting without a buffer still sees a datagram that arrives late.
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make(chan []byte, 1)
	go func() {
		d, _, err := r.Next()
		if err != nil {
			got <- nil
			return
		}
		got <- append([]byte(nil), d...)
	}()
	if _, err := tx.WriteTo([]byte("late"), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if d := <-got; string(d) != "late" {
		t.Fatalf("late datagram read as %q", d)
	}
	// A close ends the wait (or the read, if it comes first) as
	// net.ErrClosed.
	errc := make(chan error, 1)
	go func() { _, _, err := r.Next(); errc <- err }()
	rx.Close()
	select {
	case err := <-errc:
		if !udpbatch.ErrClosed(err) {
			t.Fatalf("read of a closed socket: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a closed socket's wait did not end")
	}
}

// Datagrams arriving one by one (no GSO run) come through a shared Conn
// too, with their sender, over IPv4 and IPv6.
func TestSharedConnSingleDatagrams(t *testing.T) {
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} {
		rx, tx := listenOn(t, ip), listenOn(t, ip)
		bio := SharedBatchIO(rx)
		if _, ok := bio.(*Conn); !ok {
			t.Fatalf("SharedBatchIO gave %T, want a shared GRO Conn", bio)
		}
		r := udpbatch.NewReader(bio, 16)
		_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := 0; i < 3; i++ {
			if _, err := tx.WriteTo(datagram(i, 100+i), rx.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			d, from, err := r.Next()
			if err != nil || !bytes.Equal(d, datagram(i, 100+i)) {
				t.Fatalf("%s datagram %d: %d bytes, %v", ip, i, len(d), err)
			}
			if from.String() != tx.LocalAddr().String() {
				t.Fatalf("%s datagram %d from %s, want %s", ip, i, from, tx.LocalAddr())
			}
		}
	}
}

// allocBytes returns the bytes f allocates on the heap.
func allocBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
