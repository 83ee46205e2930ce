//go:build unix

package loadgen

import (
	"syscall"
	"testing"
)

// raiseFileLimit lets the test (and the controllers it starts) hold
// tens of thousands of connections.
func raiseFileLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Root may raise the hard limit too (each simulated device holds two
	// connections: calls and its policy stream).
	want := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		lim = want
	} else {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < 65536 {
		t.Logf("open-file limit %d: runs above about %d devices may fail", lim.Cur, lim.Cur/3)
	}
}
