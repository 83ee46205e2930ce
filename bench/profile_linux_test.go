package bench

import "testing"

func TestParsePerfReport(t *testing.T) {
	out := `# Samples: 1K
#
    12.50%  posternd         posternd           [.] runtime.memmove
     6.00%  postern-connect  [kernel.kallsyms]  [k] 0xffffffff813a4413
     4.00%  postern-connect  [kernel.kallsyms]  [k] 0xffffffff82203249
     3.00%  posternd         posternd (deleted)  [.] 0x00000000000936b5
     2.00%  postern-connect  postern-connector  [.] github.com/quic-go/quic-go.(*Conn).run
`
	top, pkgs, cats := parsePerfReport(out)
	if len(top) != 4 {
		t.Fatalf("top = %+v", top)
	}
	if top[0].Symbol != "runtime.memmove" || top[0].Percent != 12.5 {
		t.Errorf("first = %+v", top[0])
	}
	if top[1].Object != "[kernel]" || top[1].Percent != 10 {
		t.Errorf("kernel lines not merged: %+v", top[1])
	}
	if top[2].Object != "posternd (deleted)" || top[2].Symbol != "0x00000000000936b5" {
		t.Errorf("deleted object: %+v", top[2])
	}
	if cats["quic-go"] != 2 || cats["kernel (syscalls, UDP and TUN I/O)"] != 10 {
		t.Errorf("categories = %v", cats)
	}
	got := map[string]float64{}
	for _, p := range pkgs {
		got[p.Command+" "+p.Symbol] = p.Percent
	}
	if got["postern-connect github.com/quic-go/quic-go"] != 2 || got["posternd runtime"] != 12.5 || got["posternd unresolved"] != 3 {
		t.Errorf("packages = %v", got)
	}
}
