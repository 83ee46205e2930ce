package cmdlog

import (
	"bytes"
	"strings"
	"testing"
)

func TestVerboseLogsDebug(t *testing.T) {
	for _, verbose := range []bool{false, true} {
		var b bytes.Buffer
		log := New(&b, verbose)
		log.Debug("detail")
		log.Info("event", "k", 1)
		out := b.String()
		if got := strings.Contains(out, "msg=detail"); got != verbose {
			t.Errorf("verbose=%v: debug line logged %v, want %v:\n%s", verbose, got, verbose, out)
		}
		if !strings.Contains(out, "level=INFO msg=event k=1") {
			t.Errorf("verbose=%v: info line missing:\n%s", verbose, out)
		}
	}
}
