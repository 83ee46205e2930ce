//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/lab"
)

var (
	theLab   *lab.Lab
	startErr error
)

func binDir() string {
	if d := os.Getenv("POSTERN_BIN"); d != "" {
		return d
	}
	d, _ := filepath.Abs(filepath.Join("..", "..", "bin"))
	return d
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// The suite runs from scripts/test.d/50-e2e.sh and `make e2e`, not as
	// part of the unit-test pass (go test ./...), which would start a lab
	// in parallel with every other package's tests.
	if os.Getenv("POSTERN_E2E") != "1" {
		fmt.Fprintln(os.Stderr, "skipping the end-to-end suite: set POSTERN_E2E=1 (scripts/test.d/50-e2e.sh and make e2e do)")
		return 0
	}
	if os.Geteuid() != 0 {
		if testenv.InCI() {
			fmt.Fprintln(os.Stderr, "FAIL: the end-to-end suite needs root (network namespaces); CI=true makes this a failure")
			return 1
		}
		fmt.Fprintln(os.Stderr, "skipping the end-to-end suite: needs root (network namespaces)")
		return 0
	}
	reachable := lab.DefaultReachableConnectors
	if v := os.Getenv("POSTERN_LAB_REACHABLE_CONNECTORS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "POSTERN_LAB_REACHABLE_CONNECTORS=%q: %v\n", v, err)
			return 2
		}
		reachable = b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	theLab, startErr = lab.Start(ctx, lab.Options{
		BinDir:              binDir(),
		ReachableConnectors: reachable,
		Postern:             true,
		Progress:            os.Stderr,
		Verbose:             os.Getenv("POSTERN_LAB_VERBOSE") == "1",
	})
	cancel()
	if startErr != nil {
		fmt.Fprintf(os.Stderr, "the lab did not start: %v\n", startErr)
	}
	// Ctrl-C or SIGTERM: clean up the lab before dying.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "got %v: cleaning up the lab\n", s)
		if theLab != nil {
			_ = theLab.Close(true)
		}
		os.Exit(1)
	}()
	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	if theLab != nil {
		if err := theLab.Close(code != 0); err != nil {
			fmt.Fprintf(os.Stderr, "clean up the lab: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// getLab returns the shared lab or fails the test when it did not start.
func getLab(t *testing.T) *lab.Lab {
	t.Helper()
	if startErr != nil || theLab == nil {
		t.Fatalf("the lab did not start: %v", startErr)
	}
	return theLab
}
