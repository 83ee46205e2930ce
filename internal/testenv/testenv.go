// Package testenv holds the helpers the tests of every package share:
// requirements with the CI rule (a test that cannot run skips, except under
// CI=true where it fails), waiting on a condition with a deadline, goroutine
// leak checks, TCP and UDP echo servers, a logger that writes to the test's
// log, and a buffer safe for concurrent writers. Network namespaces are in
// netnstest.
package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI=true, where a test that
// cannot run must fail instead of skipping.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips the test when ok is false, or fails it under CI=true; the
// message says what is missing.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true makes this a failure)", msg)
	}
	t.Skip(msg)
}

// RequireRoot needs root, for why (e.g. "network namespaces").
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root (%s)", why)
}

// RequireNetns needs what a test that builds network namespaces needs: root
// and iproute2's ip, plus every program in tools on PATH.
func RequireNetns(t testing.TB, tools ...string) {
	t.Helper()
	RequireRoot(t, "network namespaces")
	RequireTools(t, append([]string{"ip"}, tools...)...)
}

// RequireTools needs every program in tools on PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	Require(t, len(missing) == 0, "%s not installed (run make deps)", strings.Join(missing, ", "))
}

// Eventually and Poll look again after pollFirst, doubling the wait up to
// pollMax: fast conditions are seen at once, slow ones (a curl in a network
// namespace) do not busy the machine.
const (
	pollFirst = 10 * time.Millisecond
	pollMax   = 250 * time.Millisecond
)

// Eventually waits until ok returns true, failing the test after timeout
// with "timed out waiting for what".
func Eventually(t testing.TB, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	Poll(t, timeout, what, func() error {
		if ok() {
			return nil
		}
		return errors.New("not yet")
	})
}

// Poll waits until f returns nil, failing the test after timeout with the
// last error f returned.
func Poll(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := PollErr(timeout, f); err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
}

// PollErr is Poll for code without a testing.TB (helpers in goroutines,
// TestMain): it returns f's last error once timeout passed, or nil.
func PollErr(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	wait := pollFirst
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(min(wait, max(time.Until(deadline), time.Millisecond)))
		wait = min(wait*2, pollMax)
	}
}

// WaitGoroutines waits until at most most goroutines run (those a test
// started have ended), failing the test after timeout with every
// goroutine's stack.
func WaitGoroutines(t testing.TB, most int, timeout time.Duration) {
	t.Helper()
	if err := PollErr(timeout, func() error {
		if n := runtime.NumGoroutine(); n > most {
			return fmt.Errorf("%d goroutines, want at most %d", n, most)
		}
		return nil
	}); err != nil {
		buf := make([]byte, 1<<16)
		t.Fatalf("goroutines leaked: %v\n%s", err, buf[:runtime.Stack(buf, true)])
	}
}

// WaitNoGoroutines waits until no goroutine but the caller's has a stack
// for which leaked returns true (a package's leak rule: its own code, and
// that of libraries it starts goroutines in). After timeout it returns an
// error with those goroutines' stacks. It takes no testing.TB, so a
// TestMain can call it after m.Run.
func WaitNoGoroutines(timeout time.Duration, leaked func(stack string) bool) error {
	var last []string
	err := PollErr(timeout, func() error {
		last = last[:0]
		for _, g := range otherGoroutines() {
			if leaked(g) {
				last = append(last, g)
			}
		}
		if len(last) > 0 {
			return fmt.Errorf("%d goroutines still running", len(last))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("goroutine leak: %w:\n%s", err, strings.Join(last, "\n\n"))
	}
	return nil
}

// otherGoroutines returns the stack of every goroutine but the caller's.
func otherGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	// The calling goroutine's stack comes first.
	gs := strings.Split(string(buf), "\n\n")
	return gs[1:]
}

// Serve accepts connections on ln and runs handle on each in its own
// goroutine (handle closes the connection), until the test ends and ln is
// closed.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	accepting := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-accepting })
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

// EchoTCP listens on addr and echoes every connection until EOF, then
// closes its write side. It stops with the test.
func EchoTCP(t testing.TB, addr string) (net.Listener, uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("echo server on %s: %v", addr, err)
	}
	Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		// The peer's EOF was read: draining before Close avoids a reset
		// should anything still arrive.
		_, _ = io.Copy(io.Discard, c)
	})
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// FreeAddr returns "ip:port" with a port that was free on ip for network
// ("tcp" or "udp") a moment ago, for a program under test that must be
// told where to listen before it starts.
func FreeAddr(t testing.TB, network, ip string) string {
	t.Helper()
	var addr net.Addr
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("free UDP port on %s: %v", ip, err)
		}
		addr = pc.LocalAddr()
		pc.Close()
	case "tcp":
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("free TCP port on %s: %v", ip, err)
		}
		addr = ln.Addr()
		ln.Close()
	default:
		t.Fatalf("FreeAddr: network %q is neither tcp nor udp", network)
	}
	return addr.String()
}

// EchoUDP listens on addr and sends every datagram back to its sender. It
// stops with the test.
func EchoUDP(t testing.TB, addr string) (net.PacketConn, uint16) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP echo server on %s: %v", addr, err)
	}
	reading := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-reading })
	go func() {
		defer close(reading)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return pc, uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// WaitReady reads the output of a helper process (typically this test
// binary run again in another environment, such as a network namespace)
// until it prints a line "READY", and returns what it printed up to and
// including that line. The test fails, showing that output, when the helper
// prints a line starting "HELPER-FAIL" or ends first, or after timeout. The
// rest of the output is read and dropped in the background.
func WaitReady(t testing.TB, what string, stdout io.Reader, timeout time.Duration) string {
	t.Helper()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == "READY" || strings.HasPrefix(sc.Text(), "HELPER-FAIL") {
				break
			}
		}
		ready <- strings.Join(lines, "\n")
		for sc.Scan() {
		}
	}()
	select {
	case s := <-ready:
		if !strings.HasSuffix(s, "READY") {
			t.Fatalf("%s did not get ready: %s", what, s)
		}
		return s
	case <-time.After(timeout):
		t.Fatalf("%s not ready within %v", what, timeout)
		return ""
	}
}

// SyncBuffer is a bytes.Buffer that goroutines may write while the test
// reads it: the output of a logger or a program under test.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Reset forgets what was written so far.
func (s *SyncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// Logger returns the logger for the code a test runs: silent, unless
// POSTERN_TEST_LOG is set, then at debug level into the test's log (shown
// for failed tests and with -v). Records logged after the test ended are
// dropped rather than panicking.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("POSTERN_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
