package bench

import (
	"context"
	"errors"
	"testing"
	"time"

	"postern.dev/postern/lab"
)

// TestWaitsReportErrTimeout: the harness waits through lab.WaitFor (posternd
// connected), and such a wait that runs out is still ErrTimeout to callers
// of the harness.
func TestWaitsReportErrTimeout(t *testing.T) {
	err := lab.WaitFor(context.Background(), 50*time.Millisecond, "posternd connected", func() error { return errors.New("state idle") })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("a wait that ran out: %v, want ErrTimeout", err)
	}
}
