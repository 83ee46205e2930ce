package relay

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"postern.dev/postern/traversal/sigwire"
)

func udpPair(t *testing.T) (*net.UDPConn, *net.UDPConn) {
	t.Helper()
	a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Queued writes leave only on flush, all of them, in order.
func TestBatchWriterSendsOnFlush(t *testing.T) {
	sock, dst := udpPair(t)
	w := newBatchWriter(sock)
	for i := 0; i < 70; i++ { // more than one GSO run
		if !w.queue([]byte(fmt.Sprintf("datagram %d", i)), dst.LocalAddr()) {
			t.Fatal("datagram to a UDP address not queued")
		}
	}
	buf := make([]byte, 1600)
	// 70 is more than one sendmsg carries: the first 64 left when the 65th
	// was queued, the rest wait for flush.
	_ = dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 64; i++ {
		n, _, err := dst.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := fmt.Sprintf("datagram %d", i); string(buf[:n]) != want {
			t.Fatalf("read %q, want %q", buf[:n], want)
		}
	}
	_ = dst.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := dst.ReadFrom(buf); err == nil {
		t.Fatal("a queued datagram left before flush")
	}
	w.flush()
	_ = dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 64; i < 70; i++ {
		n, _, err := dst.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d after flush: %v", i, err)
		}
		if want := fmt.Sprintf("datagram %d", i); string(buf[:n]) != want {
			t.Fatalf("read %q, want %q", buf[:n], want)
		}
	}
}

// Through a running relay with batched I/O, bursts in both directions
// arrive complete and in order, the last datagram of a burst without
// waiting for more traffic, and the relay still refuses peers that are no
// candidate of a session.
func TestRelayForwardsBurstsBothWays(t *testing.T) {
	f := newFixture(t, nil)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	_ = peer.SetReadBuffer(4 << 20)
	f.session(t, sigwire.Candidate{Type: sigwire.CandHost, Addr: peer.LocalAddr().String()})
	u, p := deviceCreds("user-1", "dev-1")
	_, relayed, err := f.turnClient(t, u, p)
	if err != nil {
		t.Fatal(err)
	}
	// Bursts small enough for the test client's default socket buffer.
	const burst = 50
	msg := func(dir string, i int) []byte {
		b := bytes.Repeat([]byte{byte(i)}, 1100)
		copy(b, fmt.Sprintf("%s %d.", dir, i))
		return b
	}
	buf := make([]byte, 2048)
	// The first datagram opens the permission and the channel binding.
	if _, err := relayed.WriteTo(msg("up", 0), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, relayAddr, err := peer.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], msg("up", 0)) {
		t.Fatalf("first datagram at the peer: %q %v", buf[:min(n, 10)], err)
	}
	for round := 0; round < 6; round++ {
		for i := 1; i <= burst; i++ {
			if _, err := relayed.WriteTo(msg("up", i), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		got := 0
		for got < burst {
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := peer.ReadFrom(buf)
			if err != nil {
				t.Fatalf("round %d: %d of %d datagrams reached the peer: %v", round, got, burst, err)
			}
			if !bytes.Equal(buf[:n], msg("up", got+1)) {
				t.Fatalf("round %d: datagram %q…, want %d", round, buf[:12], got+1)
			}
			got++
		}
		for i := 1; i <= burst; i++ {
			if _, err := peer.WriteTo(msg("down", i), relayAddr); err != nil {
				t.Fatal(err)
			}
		}
		for got = 0; got < burst; got++ {
			_ = relayed.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := relayed.ReadFrom(buf)
			if err != nil {
				t.Fatalf("round %d: %d of %d datagrams reached the client: %v", round, got, burst, err)
			}
			if from.String() != peer.LocalAddr().String() || !bytes.Equal(buf[:n], msg("down", got+1)) {
				t.Fatalf("round %d: datagram %q… from %s, want %d from %s", round, buf[:12], from, got+1, peer.LocalAddr())
			}
		}
	}
	// Permissions still hold: a peer that is no candidate gets nothing.
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	}
	defer other.Close()
	_, _ = relayed.WriteTo([]byte("to a stranger"), other.LocalAddr())
	_ = other.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, _, err := other.ReadFrom(buf); err == nil {
		t.Fatal("the relay forwarded to an address outside every session")
	}
}

// ChannelData to a client with an allocation waits for its packet handler's
// flush; STUN to it, and anything to other endpoints, leaves at once; a
// dropped client's ChannelData leaves at once too.
func TestFilterConnQueuesChannelDataPerClient(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("batched I/O is Linux only")
	}
	sock, client := udpPair(t)
	_, other := udpPair(t)
	fc := newFilterConn(sock, func(net.Addr) bool { return false }, &flushSet{})
	w := fc.addClient(client.LocalAddr())
	if w == nil {
		t.Fatal("no client queue on a batching UDP socket")
	}
	chanData := []byte{0x40, 0x00, 0x00, 0x04, 'd', 'a', 't', 'a'}
	stunMsg := []byte{0x01, 0x01, 0x00, 0x00, 's', 't', 'u', 'n'}
	for _, x := range []struct {
		b  []byte
		to *net.UDPConn
	}{{chanData, client}, {stunMsg, client}, {chanData, other}} {
		if n, err := fc.WriteTo(x.b, x.to.LocalAddr()); err != nil || n != len(x.b) {
			t.Fatalf("WriteTo: %d, %v", n, err)
		}
	}
	buf := make([]byte, 64)
	read := func(c *net.UDPConn, want []byte, wait time.Duration) bool {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(wait))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return false
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("read %q, want %q", buf[:n], want)
		}
		return true
	}
	if !read(client, stunMsg, 5*time.Second) {
		t.Fatal("STUN to the client was held back")
	}
	if !read(other, chanData, 5*time.Second) {
		t.Fatal("ChannelData to an endpoint without allocation was held back")
	}
	if read(client, chanData, 50*time.Millisecond) {
		t.Fatal("queued ChannelData left before the flush")
	}
	w.w.flush()
	if !read(client, chanData, 5*time.Second) {
		t.Fatal("queued ChannelData did not leave on flush")
	}
	fc.dropClient(client.LocalAddr(), w)
	if _, err := fc.WriteTo(chanData, client.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if !read(client, chanData, 5*time.Second) {
		t.Fatal("ChannelData to a dropped client was held back")
	}
}
