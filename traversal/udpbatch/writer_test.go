package udpbatch

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func payload(i, n int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, n)
	copy(b, fmt.Sprintf("#%d.", i))
	return b
}

func expect(t *testing.T, c *net.UDPConn, want [][]byte) {
	t.Helper()
	buf := make([]byte, 70000)
	for i, w := range want {
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i, len(want), err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("datagram %d: got %d bytes %q…, want %d bytes %q…", i, n, buf[:min(n, 8)], len(w), w[:min(len(w), 8)])
		}
	}
}

// A batch of runs of different sizes and destinations arrives datagram by
// datagram, intact and in order per destination, with GSO and without.
func TestFlushDeliversEveryDatagram(t *testing.T) {
	for _, useGSO := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", useGSO), func(t *testing.T) {
			src, a, b := listen(t), listen(t), listen(t)
			w := NewWriter(src)
			if !useGSO {
				w.gso = false
			} else if runtime.GOOS == "linux" && !w.GSO() {
				t.Fatal("no GSO on a loopback UDP socket on Linux")
			}
			var sentN, sentBytes, wantBytes int
			w.Sent = func(n, b int) { sentN += n; sentBytes += b }
			hdr := []byte{0x40, 0x01, 0, 0}
			var wantA, wantB [][]byte
			add := func(to *net.UDPConn, want *[][]byte, i, n int) {
				p := payload(i, n)
				w.Append(hdr, p, addrOf(to))
				*want = append(*want, append(append([]byte(nil), hdr...), p...))
				wantBytes += len(hdr) + n
			}
			// 10 full-size, one short, 5 full-size to a; 3 to b; 2 to a.
			i := 0
			for ; i < 10; i++ {
				add(a, &wantA, i, 1200)
			}
			add(a, &wantA, i, 300)
			for i++; i < 16; i++ {
				add(a, &wantA, i, 1200)
			}
			for ; i < 19; i++ {
				add(b, &wantB, i, 1200)
			}
			for ; i < 21; i++ {
				add(a, &wantA, i, 40)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if w.GSO() != (useGSO && runtime.GOOS == "linux") {
				t.Fatalf("GSO after Flush = %v", w.GSO())
			}
			if w.Len() != 0 {
				t.Fatalf("Len after Flush = %d", w.Len())
			}
			if sentN != 21 || sentBytes != wantBytes {
				t.Fatalf("Sent reported %d datagrams, %d bytes; want 21, %d", sentN, sentBytes, wantBytes)
			}
			// What the kernel refuses is not reported as sent.
			w.Append(nil, payload(0, 100), netip.MustParseAddrPort("[2001:db8::1]:9"))
			if err := w.Flush(); err == nil {
				t.Fatal("send of an IPv6 datagram on an IPv4 socket succeeded")
			}
			if sentN != 21 {
				t.Fatalf("Sent reported a datagram the kernel refused (%d)", sentN)
			}
			expect(t, a, wantA)
			expect(t, b, wantB)
		})
	}
}

// Runs group what one sendmsg may carry: same address, same size, at most
// one shorter datagram at the end, at most MaxSegments.
func TestRuns(t *testing.T) {
	x, y := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:1")
	w := &Writer{gso: true}
	sizes := []struct {
		n  int
		to netip.AddrPort
	}{{1200, x}, {1200, x}, {1200, x}, {500, x}, {1200, x}, {1200, y}, {1300, y}, {1300, y}}
	for _, s := range sizes {
		w.Append(nil, make([]byte, s.n), s.to)
	}
	var runs []int
	for i := 0; i < w.Len(); {
		j := w.run(i)
		runs = append(runs, j-i)
		i = j
	}
	if fmt.Sprint(runs) != "[4 1 1 2]" {
		t.Fatalf("runs %v, want [4 1 1 2]", runs)
	}
	w = &Writer{gso: true}
	for i := 0; i < MaxSegments+3; i++ {
		w.Append(nil, make([]byte, 100), x)
	}
	if j := w.run(0); j != MaxSegments {
		t.Fatalf("first run of %d equal datagrams: %d, want %d", MaxSegments+3, j, MaxSegments)
	}
	w.gso = false
	if j := w.run(0); j != 1 {
		t.Fatalf("run without GSO: %d datagrams, want 1", j)
	}
}

// AppendPadded adds zero bytes after the payload, and a run of padded
// datagrams of one size still leaves as one run of equal segments.
func TestAppendPaddedPadsWithZeros(t *testing.T) {
	src, dst := listen(t), listen(t)
	w := NewWriter(src)
	hdr := []byte{0x40, 0x01, 0x00, 0x05}
	want := make([][]byte, 3)
	for i := range want {
		// A stale buffer must not leak into the padding.
		w.buf = append(w.buf[:0], bytes.Repeat([]byte{0xff}, 16)...)[:0]
		w.AppendPadded(hdr, []byte{byte(i), 2, 3, 4, 5}, 3, addrOf(dst))
		want[i] = []byte{0x40, 0x01, 0x00, 0x05, byte(i), 2, 3, 4, 5, 0, 0, 0}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, dst, want)
	for i := range 3 {
		w.AppendPadded(hdr, []byte{byte(i), 2, 3, 4, 5}, 3, addrOf(dst))
	}
	if got := w.run(0); w.GSO() && got != 3 {
		t.Fatalf("three padded datagrams of one size make a run of %d", got)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	expect(t, dst, want)
}
