package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"postern.dev/postern/wire"
)

// sockOpt reads an integer socket option of c.
func sockOpt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil || gerr != nil {
		t.Fatalf("getsockopt: %v %v", err, gerr)
	}
	return v
}

func TestDialTCPDirectConnects(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				if network == "tcp6" && os.Getenv("CI") != "true" {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
			ap := ln.Addr().(*net.TCPAddr).AddrPort()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := dialTCPDirect(ctx, ap, flowKeepAlive)
			if err != nil {
				t.Fatalf("dial %s: %v", ap, err)
			}
			defer c.Close()
			if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != ap {
				t.Errorf("RemoteAddr %s, want %s", got, ap)
			}
			if sockOpt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY) == 0 {
				t.Error("TCP_NODELAY is off")
			}
			if sockOpt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE) == 0 {
				t.Error("SO_KEEPALIVE is off")
			}
			if got := sockOpt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != int(flowKeepAlive/time.Second) {
				t.Errorf("TCP_KEEPIDLE %d, want %d", got, int(flowKeepAlive/time.Second))
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo: %q %v", buf, err)
			}
			closeWrite(c) // half-close reaches the server: it ends its copy and closes
			if n, err := c.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("after CloseWrite: %d bytes, err %v; want EOF", n, err)
			}
		})
	}
}

func TestDialTCPDirectRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close() // nothing listens there now: the kernel answers RST
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialTCPDirect(ctx, ap, flowKeepAlive)
	if err == nil {
		c.Close()
		t.Fatal("dial to a closed port succeeded")
	}
	if st := dialStatus(err); st != wire.StatusRefused {
		t.Errorf("status %v for %v, want refused", st, err)
	}
}

// fullListener is a listening socket whose accept queue is full: the kernel
// drops further SYNs, so a dial to it stays in its handshake.
func fullListener(t *testing.T) (netip.AddrPort, int, net.Conn) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Backlog 0 holds one connection; this one fills it.
	first, err := net.DialTimeout("tcp4", ap.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	return ap, fd, first
}

func TestDialTCPDirectTimesOutWhileHandshaking(t *testing.T) {
	ap, _, _ := fullListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := dialTCPDirect(ctx, ap, flowKeepAlive)
	if err == nil {
		c.Close()
		t.Fatal("the kernel accepted beyond a full backlog (SYN not dropped); nothing to time out")
	}
	if st := dialStatus(err); st != wire.StatusTimeout {
		t.Errorf("status %v for %v, want timeout", st, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("the dial took %v with a 300 ms deadline", el)
	}
}

func TestDialTCPDirectCanceled(t *testing.T) {
	ap, _, _ := fullListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		c, err := dialTCPDirect(ctx, ap, flowKeepAlive)
		if c != nil {
			c.Close()
		}
		res <- err
	}()
	cancel()
	select {
	case err := <-res:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("canceled dial: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a canceled dial did not return")
	}
}

// TestDialTCPDirectWaitsForSlowHandshake: a handshake that does not finish
// within connect() (the SYN was dropped and is retransmitted) completes in
// the poller, and the connection knows its peer.
func TestDialTCPDirectWaitsForSlowHandshake(t *testing.T) {
	ap, fd, _ := fullListener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := make(chan net.Conn, 1)
	errc := make(chan error, 1)
	go func() {
		c, err := dialTCPDirect(ctx, ap, flowKeepAlive)
		if err != nil {
			errc <- err
			return
		}
		res <- c
	}()
	// Wait until the dial's SYN was dropped and its socket waits in SYN-SENT
	// (the poller path), then make room: the retransmitted SYN (about a
	// second after the first) is answered.
	for !synSentTo(t, ap) {
		select {
		case err := <-errc:
			t.Fatalf("dial: %v", err)
		case c := <-res:
			c.Close()
			t.Fatal("the dial completed although the listener's queue was full")
		case <-ctx.Done():
			t.Fatal("no socket in SYN-SENT to the full listener")
		case <-time.After(5 * time.Millisecond):
		}
	}
	nfd, _, err := unix.Accept(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nfd)
	select {
	case c := <-res:
		defer c.Close()
		if ra, ok := c.RemoteAddr().(*net.TCPAddr); !ok || ra.AddrPort() != ap {
			t.Errorf("RemoteAddr %v, want %s", c.RemoteAddr(), ap)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Errorf("write: %v", err)
		}
	case err := <-errc:
		t.Fatalf("dial: %v", err)
	case <-ctx.Done():
		t.Fatal("the dial did not complete after the listener made room")
	}
}

// synSentTo reports whether a socket of this network namespace is in
// SYN-SENT towards ap (from /proc/net/tcp).
func synSentTo(t *testing.T, ap netip.AddrPort) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	a4 := ap.Addr().As4()
	// /proc/net/tcp prints the address as a little-endian hex word.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X 02", a4[3], a4[2], a4[1], a4[0], ap.Port())
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[2]+" "+f[3] == want {
			return true
		}
	}
	return false
}
