package loadgen

import "testing"

// raiseFileLimit has nothing to raise on Windows: a process's handles have
// no RLIMIT_NOFILE-like cap.
func raiseFileLimit(*testing.T) {}
