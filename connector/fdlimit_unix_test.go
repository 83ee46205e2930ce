//go:build unix

package connector

import (
	"syscall"
	"testing"
)

// raiseFDLimit raises the open-file limit to at least n (root may raise the
// hard limit too), or skips.
func raiseFDLimit(tb testing.TB, n uint64) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		tb.Skip(err)
	}
	if r.Cur >= n {
		return
	}
	if r.Max < n {
		r.Max = n
	}
	r.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		tb.Skipf("need %d open files: %v", n, err)
	}
}
