package connector

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// A connector is a TCP proxy: it dials the private host for every flow and,
// when the client closes first, closes first too, so each short connection
// leaves a TIME_WAIT entry on the connector's host for 60 s. Linux reuses
// such an entry for a new outgoing connection only with
// net.ipv4.tcp_tw_reuse=1 (its default, 2, does so on loopback only); with
// the default port range (28,232 ports) a connector then tops out at about
// 470 new connections per second to one service, and the rest fail (make
// bench measured exactly that). hostAdvice reads the settings and says
// what to change; the connector logs it at start.

// procSys reads a /proc/sys file (Linux); a missing file yields "".
var procSys = func(path string) string {
	b, err := os.ReadFile("/proc/sys/" + path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// portsWanted is the ephemeral port range size below which hostAdvice asks
// for a wider one.
const portsWanted = 50000

// hostAdvice returns one line per host setting that limits how many short
// connections a second the connector can open, or nil.
func hostAdvice() []string {
	var out []string
	if v := procSys("net/ipv4/tcp_tw_reuse"); v != "" && v != "1" {
		out = append(out, fmt.Sprintf("net.ipv4.tcp_tw_reuse is %s: ports of closed connections stay unusable for 60 s, so new connections to one service top out at a few hundred a second; set it to 1 (docs/connector.md)", v))
	}
	if f := strings.Fields(procSys("net/ipv4/ip_local_port_range")); len(f) == 2 {
		lo, err1 := strconv.Atoi(f[0])
		hi, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil && hi-lo+1 < portsWanted {
			out = append(out, fmt.Sprintf("net.ipv4.ip_local_port_range is %d-%d (%d ports) for connections to private hosts; widen it, e.g. to 10000 65000 (docs/connector.md)", lo, hi, hi-lo+1))
		}
	}
	return out
}
