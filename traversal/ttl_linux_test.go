package traversal

import (
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"
)

// recvTTL reads one datagram from c and returns its payload and the IP TTL
// it arrived with (IP_RECVTTL).
func recvTTL(t *testing.T, c *net.UDPConn) ([]byte, int) {
	t.Helper()
	b := make([]byte, 1500)
	oob := make([]byte, 128)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUDP(b, oob)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_TTL {
			return b[:n], int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	t.Fatal("no TTL control message")
	return nil, 0
}

// TestPrimerTTLIsPerPacket: a primer leaves with TTL 2 and the very next
// ordinary write on the same socket (what QUIC does) with the socket's
// default TTL, on IPv4 and on dual-stack sockets.
func TestPrimerTTLIsPerPacket(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	raw, err := rx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVTTL, 1)
	}); err != nil || serr != nil {
		t.Fatalf("IP_RECVTTL: %v %v", err, serr)
	}
	to := rx.LocalAddr().(*net.UDPAddr)
	for _, bind := range []string{"127.0.0.1:0", ":0"} {
		tx, err := net.ListenUDP("udp", mustUDPAddr(t, bind))
		if err != nil {
			t.Fatal(err)
		}
		prime := lowTTLPrimer(tx)
		for i := 0; i < 3; i++ {
			if err := prime([]byte("primer"), to); err != nil {
				t.Fatalf("%s: %v", bind, err)
			}
			if _, err := tx.WriteToUDP([]byte("quic"), to); err != nil {
				t.Fatal(err)
			}
			if b, ttl := recvTTL(t, rx); string(b) != "primer" || ttl != primerTTL {
				t.Fatalf("%s: got %q with TTL %d, want primer with TTL %d", bind, b, ttl, primerTTL)
			}
			if b, ttl := recvTTL(t, rx); string(b) != "quic" || ttl <= primerTTL {
				t.Fatalf("%s: got %q with TTL %d after a primer, want the socket's default TTL", bind, b, ttl)
			}
		}
		tx.Close()
	}
}
