package procs

import (
	"runtime"
	"strings"
	"testing"
)

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name        string
		flag        int
		env         string
		start, want int
		source      string
	}{
		{"half of 2 CPUs", 0, "", 2, 1, "default"},
		{"half of 8 CPUs", 0, "", 8, 4, "default"},
		{"half of 7 CPUs rounds down", 0, "", 7, 3, "default"},
		{"one CPU stays one", 0, "", 1, 1, "default"},
		{"GOMAXPROCS in the environment wins over the default", 0, "2", 2, 2, "env"},
		{"an unusable GOMAXPROCS is ignored, as the runtime does", 0, "lots", 4, 2, "default"},
		{"a zero GOMAXPROCS is ignored, as the runtime does", 0, "0", 4, 2, "default"},
		{"the flag wins over the environment", 3, "2", 2, 3, "flag"},
		{"the flag may exceed the CPUs", 16, "", 2, 16, "flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Choose(tc.flag, tc.env, tc.start)
			if err != nil {
				t.Fatal(err)
			}
			if c.Procs != tc.want || c.Source != tc.source || c.Of != tc.start {
				t.Fatalf("Choose(%d, %q, %d) = %+v, want procs %d of %d from %s", tc.flag, tc.env, tc.start, c, tc.want, tc.start, tc.source)
			}
		})
	}
}

func TestChooseRejectsNegativeFlag(t *testing.T) {
	_, err := Choose(-1, "", 4)
	if err == nil || !strings.Contains(err.Error(), "--procs -1") {
		t.Fatalf("Choose(-1) error = %v, want one naming --procs -1", err)
	}
}

func TestApplySetsGOMAXPROCS(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(old)
	c, err := Apply(3, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 3 || c.Procs != 3 || c.Of != old {
		t.Fatalf("after Apply(3): GOMAXPROCS %d, choice %+v (started at %d)", got, c, old)
	}
	if _, err := Apply(-2, ""); err == nil || runtime.GOMAXPROCS(0) != 3 {
		t.Fatalf("Apply(-2) changed GOMAXPROCS to %d or did not fail (err %v)", runtime.GOMAXPROCS(0), err)
	}
}
