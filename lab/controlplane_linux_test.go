package lab

import (
	"context"
	"errors"
	"strings"
	"testing"
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
