package client

import (
	"time"

	"golang.org/x/sys/windows"
)

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var creation, exit, kernel, user windows.Filetime
	_ = windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user)
	// Filetime counts 100 ns intervals.
	ticks := func(f windows.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
	return time.Duration((ticks(kernel) + ticks(user)) * 100)
}
