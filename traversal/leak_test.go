package traversal

import (
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// noLeaks fails the test if goroutines of Postern, quic-go or pion outlive
// it. Call it first in a test: its cleanup then runs after every other.
func noLeaks(t *testing.T) {
	t.Cleanup(func() {
		if err := testenv.WaitNoGoroutines(10*time.Second, leaked); err != nil {
			t.Fatal(err)
		}
	})
}

// leaked: a goroutine of Postern, pion or quic-go, not a test's own (nor
// another noLeaks waiting).
func leaked(g string) bool {
	if strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "postern.dev/postern/") {
		return false
	}
	if strings.Contains(g, "postern.dev/postern/") || strings.Contains(g, "github.com/pion/") || strings.Contains(g, "github.com/quic-go/") {
		return !strings.Contains(g, "testing.(*T).Run") && !strings.Contains(g, "noLeaks")
	}
	return false
}
