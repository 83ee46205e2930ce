package connector

import (
	"strings"
	"testing"
)

func TestHostAdvice(t *testing.T) {
	old := procSys
	t.Cleanup(func() { procSys = old })
	set := func(reuse, ports string) {
		procSys = func(p string) string {
			switch p {
			case "net/ipv4/tcp_tw_reuse":
				return reuse
			case "net/ipv4/ip_local_port_range":
				return ports
			}
			return ""
		}
	}
	set("2", "32768\t60999")
	got := hostAdvice()
	if len(got) != 2 || !strings.Contains(got[0], "tcp_tw_reuse is 2") || !strings.Contains(got[1], "32768-60999 (28232 ports)") {
		t.Fatalf("Linux defaults: %q", got)
	}
	set("1", "10000 65000")
	if got := hostAdvice(); len(got) != 0 {
		t.Fatalf("a tuned host: %q", got)
	}
	set("", "") // not Linux
	if got := hostAdvice(); len(got) != 0 {
		t.Fatalf("no /proc/sys: %q", got)
	}
}
