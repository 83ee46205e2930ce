package lab

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHostOutputKeepsStderrForTheError(t *testing.T) {
	ctx := context.Background()
	out, err := HostOutput(ctx, strings.NewReader("in\n"), "sh", "-c", "cat; echo out; echo warn >&2")
	if err != nil || out != "in\nout\n" {
		t.Fatalf("HostOutput = %q, %v; want stdout only", out, err)
	}
	_, err = HostOutput(ctx, nil, "sh", "-c", "echo partial; echo broken >&2; exit 3")
	var ce *CmdError
	if !errors.As(err, &ce) || strings.TrimSpace(ce.Output) != "broken" || ExitCode(err) != 3 {
		t.Fatalf("failed command: %v (exit %d)", err, ExitCode(err))
	}
}

func TestLastLine(t *testing.T) {
	for in, want := range map[string]string{"a\nb\n": "b", "token-x\n\n": "token-x", " only ": "only", "": ""} {
		if got := LastLine(in); got != want {
			t.Errorf("LastLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWaitFor: WaitFor returns once check passes, and otherwise fails with
// ErrTimeout naming what it waited for and check's last error, also when
// ctx ends first (the lab and the benchmark harness both wait through it).
func TestWaitFor(t *testing.T) {
	calls := 0
	if err := WaitFor(context.Background(), 10*time.Second, "third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Fatalf("WaitFor = %v after %d calls, want nil after 3", err, calls)
	}
	start := time.Now()
	err := WaitFor(context.Background(), 300*time.Millisecond, "never", func() error { return errors.New("still down") })
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "waiting for never: still down") {
		t.Fatalf("WaitFor on a check that never passes = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("WaitFor with a 300ms timeout took %v", took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitFor(ctx, time.Hour, "cancelled", func() error { return errors.New("down") }); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitFor with an ended context = %v, want ErrTimeout", err)
	}
}
