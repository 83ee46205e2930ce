package relay

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// mtuDiscover returns the IPv4 (or, for an IPv6 socket, IPv6) path MTU
// discovery mode of pc.
func mtuDiscover(t *testing.T, pc net.PacketConn) int {
	t.Helper()
	rc, err := pc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		if pc.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
			v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER)
		} else {
			v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// The relay's TURN socket and its relayed sockets send with don't-fragment
// set (before, the kernel's default: fragment whatever does not fit).
func TestRelaySocketsDontFragment(t *testing.T) {
	f := newFixture(t, nil)
	if got := mtuDiscover(t, f.r.udp); got != unix.IP_PMTUDISC_PROBE {
		t.Fatalf("TURN socket: IP_MTU_DISCOVER %d, want %d (probe: don't fragment)", got, unix.IP_PMTUDISC_PROBE)
	}
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} {
		g := &countingGenerator{RelayAddressGenerator: &familyGenerator{publicIP: ip, relayIP: ip}}
		pc, _, err := g.AllocatePacketConn("udp4", 0)
		if err != nil {
			t.Fatal(err)
		}
		want := unix.IP_PMTUDISC_PROBE
		if ip.To4() == nil {
			want = unix.IPV6_PMTUDISC_PROBE
		}
		if got := mtuDiscover(t, pc.(*countingConn).PacketConn); got != want {
			t.Errorf("relayed socket on %s: MTU discovery mode %d, want %d", ip, got, want)
		}
		pc.Close()
	}
}
