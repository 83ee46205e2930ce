package loadgen

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ProcSample is a controller process's CPU time and memory.
type ProcSample struct {
	PID     int           `json:"pid"`
	CPU     time.Duration `json:"cpu"`     // user+system during the measured phase (diffSamples) or in total
	RSS     int64         `json:"rss"`     // resident bytes at the end
	Threads int           `json:"threads"` // at the end
	Err     string        `json:"error,omitempty"`
}

// clockTicks is USER_HZ, 100 on every Linux the project supports.
const clockTicks = 100

func sample(pid int) ProcSample {
	s := ProcSample{PID: pid}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		s.Err = err.Error()
		return s
	}
	// Fields after the command name (which may hold spaces), from field 3.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) > 17 {
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		s.CPU = time.Duration(ut+st) * time.Second / clockTicks
		s.Threads, _ = strconv.Atoi(f[17])
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		s.Err = err.Error()
		return s
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			s.RSS = kb << 10
		}
	}
	return s
}
