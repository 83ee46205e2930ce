//go:build unix

package connector

import (
	"runtime"
	"syscall"
	"time"
)

// cpuSampler measures the process's CPU use between samples as a fraction
// of all CPUs.
type cpuSampler struct {
	prevCPU time.Duration
	prevAt  time.Time
}

func (s *cpuSampler) sample(now time.Time) float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	var f float64
	if !s.prevAt.IsZero() {
		if wall := now.Sub(s.prevAt); wall > 0 {
			f = float64(cpu-s.prevCPU) / float64(wall) / float64(runtime.NumCPU())
		}
	}
	s.prevCPU, s.prevAt = cpu, now
	return f
}
