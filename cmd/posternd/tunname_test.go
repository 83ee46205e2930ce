package main

import (
	"runtime"
	"strings"
	"testing"
)

func TestDefaultTUNNameIsValid(t *testing.T) {
	if err := checkTUNName(runtime.GOOS, defaultTUNName); err != nil {
		t.Fatalf("the default --tun %q is refused on %s: %v", defaultTUNName, runtime.GOOS, err)
	}
}

func TestCheckTUNName(t *testing.T) {
	for _, c := range []struct {
		goos, name string
		ok         bool
	}{
		{"darwin", "utun", true},
		{"darwin", "utun7", true},
		{"darwin", "postern0", false}, // the old default everywhere
		{"darwin", "utunx", false},
		{"linux", "postern0", true},
		{"linux", "a-very-long-interface", false},
		{"linux", "bad/name", false},
		{"windows", "Postern", true},
		{"windows", "Postern Tunnel", true},
		{"linux", "", false},
	} {
		err := checkTUNName(c.goos, c.name)
		if (err == nil) != c.ok {
			t.Errorf("checkTUNName(%s, %q) = %v, want ok=%v", c.goos, c.name, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--tun") {
			t.Errorf("error does not name the flag: %v", err)
		}
	}
}
