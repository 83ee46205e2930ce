package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

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

// TestELFBuildIDAndTextHash: buildSymbols reads the GNU build ID a program
// was linked with and compares .text hashes; a build with the same code has
// the same hash whatever its build ID, and a file that is no ELF is refused
// naming it.
func TestELFBuildIDAndTextHash(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module elfprobe\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"probe\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(out string, ldflags ...string) string {
		t.Helper()
		args := append([]string{"build", "-trimpath"}, ldflags...)
		cmd := exec.Command("go", append(args, "-o", out, ".")...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v: %s", err, b)
		}
		return filepath.Join(dir, out)
	}
	const id = "0123456789abcdef0123456789abcdef01234567"
	withID := build("a", "-ldflags", "-B 0x"+id)
	other := build("b", "-ldflags", "-B 0x"+strings.Repeat("ab", 20))
	if got, err := gnuBuildID(withID); err != nil || got != id {
		t.Errorf("gnuBuildID = %q, %v; want %s", got, err, id)
	}
	a, err1 := textHash(withID)
	b, err2 := textHash(other)
	if err1 != nil || err2 != nil || a != b || len(a) != 64 {
		t.Errorf("textHash of two builds of the same code: %q %v, %q %v", a, err1, b, err2)
	}
	notELF := filepath.Join(dir, "main.go")
	if _, err := textHash(notELF); err == nil || !strings.Contains(err.Error(), notELF) {
		t.Errorf("textHash of a source file: %v, want an error naming it", err)
	}
}
