package connector

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dialTCPDirect opens a TCP connection to ap for a flow. net.Dialer starts
// a non-blocking connect and then always parks the dialing goroutine until
// the poller reports the socket writable, although on the networks a
// connector usually sits on (a LAN, a veth, loopback) the kernel completes
// the handshake inside connect(), before the call returns: the flow's
// status then waited for scheduler hand-offs on a busy connector (dial p50
// 112 µs against 35 µs for the same connect in a quiet process). Here the
// dialer's Control hook, which runs on the new socket before the dialer's
// own connect, starts the connect itself: when the kernel finished the
// handshake in that call, the dialer's connect finds the socket connected
// (EISCONN) and returns without waiting; a handshake still under way makes
// it wait in the poller as usual (EALREADY), for ctx or the socket.
//
// An earlier version dialed a raw socket and wrapped it with os.NewFile and
// net.FileConn, which cost about 13 more system calls per dial (fcntl,
// epoll_ctl, dup, getsockopt, getsockname, getpeername, close and more
// setsockopt; strace of BenchmarkDialTCPDirect): a quarter of the dial's
// CPU (docs/datapath-performance.md, "Opening flows in parallel").
func dialTCPDirect(ctx context.Context, ap netip.AddrPort, keepAlive time.Duration) (net.Conn, error) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepAlive, Interval: keepAlive}}
	if !ap.Addr().IsValid() || ap.Addr().Zone() != "" {
		// Zoned addresses (link-local) are never dialed by flows; keep
		// net.Dialer's handling for anything unusual.
		return d.DialContext(ctx, "tcp", ap.String())
	}
	network := "tcp6"
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	if ap.Addr().Is4() {
		network = "tcp4"
		sa = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	d.ControlContext = func(_ context.Context, _, _ string, rc syscall.RawConn) error {
		return earlyConnect(rc, sa)
	}
	// Not DialTCP: its local address (even the zero one) is bound after
	// the Control hook, and a connected socket cannot be bound.
	return d.DialContext(ctx, network, ap.String())
}

// earlyConnect starts a non-blocking connect to sa on the socket behind rc.
// It returns nil when the handshake finished or is under way, and the
// connect error otherwise (e.g. ECONNREFUSED, which loopback and veth
// answer inside the call).
func earlyConnect(rc syscall.RawConn, sa unix.Sockaddr) error {
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		switch err := unix.Connect(int(fd), sa); err {
		case nil, unix.EINPROGRESS, unix.EINTR:
			// Done or under way: the dialer's connect tells which.
		default:
			cerr = os.NewSyscallError("connect", err)
		}
	}); err != nil {
		return err
	}
	return cerr
}
