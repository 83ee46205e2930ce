package traversal

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// noLeaks fails the test if goroutines of Postern, quic-go or pion outlive
// it. Call it first in a test: its cleanup then runs after every other.
func noLeaks(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			leaked := leakedGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "leakedGoroutines") || strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "postern.dev/postern/") {
			continue
		}
		if strings.Contains(g, "postern.dev/postern/") || strings.Contains(g, "github.com/pion/") || strings.Contains(g, "github.com/quic-go/") {
			if strings.Contains(g, "testing.(*T).Run") || strings.Contains(g, "noLeaks") {
				continue
			}
			out = append(out, g)
		}
	}
	return out
}
