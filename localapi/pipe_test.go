package localapi

import (
	"strings"
	"testing"
)

func TestPipeName(t *testing.T) {
	a := PipeName(`C:\ProgramData\Postern\posternd.sock`)
	if !strings.HasPrefix(a, PipePrefix+"posternd-") || len(a) != len(PipePrefix)+len("posternd-")+16 {
		t.Errorf("PipeName = %q", a)
	}
	if b := PipeName(`C:\ProgramData\Postern\other.sock`); b == a {
		t.Errorf("two sockets share pipe %q", a)
	}
	if got := PipeName(`\\.\pipe\custom`); got != `\\.\pipe\custom` {
		t.Errorf("an explicit pipe is kept: %q", got)
	}
	if PipeName("/var/lib/postern/posternd.sock") != PipeName("/var/lib/postern/./posternd.sock") {
		t.Error("equivalent paths map to different pipes")
	}
}
