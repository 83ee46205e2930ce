package controller

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process has used, so
// benchmarks can report per-core figures on a busy shared machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
