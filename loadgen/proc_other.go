//go:build !linux

package loadgen

import "time"

// ProcSample is a controller process's CPU time and memory (Linux only).
type ProcSample struct {
	PID     int           `json:"pid"`
	CPU     time.Duration `json:"cpu"`
	RSS     int64         `json:"rss"`
	Threads int           `json:"threads"`
	Err     string        `json:"error,omitempty"`
}

func sample(pid int) ProcSample {
	return ProcSample{PID: pid, Err: "process statistics are read from /proc (Linux)"}
}
