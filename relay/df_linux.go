package relay

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// setDontFragment sets the don't-fragment bit on the datagrams of pc, as
// quic-go does on its own sockets (IP_PMTUDISC_PROBE: the kernel neither
// fragments nor shrinks datagrams to a path MTU it learned; one larger than
// the device's MTU fails to send). A relay that fragmented what it
// forwards would hide a too-large datagram from the path MTU discovery of
// the endpoints, and on an IPv6 leg a 1,452-byte packet plus headers was
// split in two. A dual-stack socket gets both options; one failing is fine.
func setDontFragment(pc net.PacketConn) error {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return fmt.Errorf("don't-fragment on %T: no socket", pc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("don't-fragment: %w", err)
	}
	var err4, err6 error
	if err := rc.Control(func(fd uintptr) {
		err4 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		err6 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
	}); err != nil {
		return fmt.Errorf("don't-fragment: %w", err)
	}
	if err4 != nil && err6 != nil {
		return fmt.Errorf("don't-fragment on %s: %w", pc.LocalAddr(), errors.Join(err4, err6))
	}
	return nil
}
