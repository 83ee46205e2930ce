// Package procs chooses how many threads run the Go code of a data-path
// daemon (posternd, postern-connector) at once: its GOMAXPROCS.
//
// A daemon that carries other programs' traffic is one of several busy
// parties on its host: every byte also passes the kernel's TCP stack and the
// applications (on a client) or the private hosts' sockets (on a connector).
// Its data path is a chain of goroutine hand-offs (TUN reader, netstack,
// splice, QUIC run loop, send queue), and with an idle P for each core the Go
// scheduler wakes a sleeping thread on almost every hand-off, and those
// threads then compete for the cores with the work they serve. The default
// is therefore half of the processors the runtime found, at least one; the
// measurements behind it are in docs/datapath-performance.md ("GOMAXPROCS").
package procs

import (
	"fmt"
	"runtime"
	"strconv"
)

// Choice is the GOMAXPROCS a daemon runs with and why.
type Choice struct {
	Procs  int    // in effect
	Of     int    // what the runtime chose at start-up (CPUs, affinity, cgroup limit)
	Source string // "flag", "env" (GOMAXPROCS set) or "default"
}

// Default is the GOMAXPROCS used when neither the flag nor the environment
// sets one: half of start, at least one.
func Default(start int) int { return max(1, start/2) }

// Choose decides without changing anything. flag is the daemon's --procs
// value (0: not given); env is the GOMAXPROCS environment variable, which
// the runtime already applied and which wins over the default but not over
// the flag; start is runtime.GOMAXPROCS(0) at start-up.
func Choose(flag int, env string, start int) (Choice, error) {
	switch {
	case flag < 0:
		return Choice{}, fmt.Errorf("--procs %d: must be 0 (half the CPUs) or more", flag)
	case flag > 0:
		return Choice{Procs: flag, Of: start, Source: "flag"}, nil
	}
	if env != "" {
		if n, err := strconv.Atoi(env); err == nil && n > 0 {
			return Choice{Procs: start, Of: start, Source: "env"}, nil
		}
	}
	return Choice{Procs: Default(start), Of: start, Source: "default"}, nil
}

// Apply chooses (see Choose) from the process's environment and sets
// GOMAXPROCS.
func Apply(flag int, env string) (Choice, error) {
	c, err := Choose(flag, env, runtime.GOMAXPROCS(0))
	if err != nil {
		return c, err
	}
	if c.Procs != c.Of {
		runtime.GOMAXPROCS(c.Procs)
	}
	return c, nil
}
