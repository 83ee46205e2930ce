//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/lab"
)

// Issue 17, in the lab with real OpenSSH: db requires approval; alice's ssh
// is refused and `postern resources` says what to do; she requests it, she
// cannot approve it herself, bob (an approver) approves it from his own
// laptop; ssh works; when the grant ends, the running SSH session is closed
// within 1 s and new ones are refused again.
func TestJITApprovalGrantsAndExpiryEndsSSH(t *testing.T) {
	l := workingLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	jit := l.Network.Clone()
	for i := range jit.Resources {
		if jit.Resources[i].Name == "db" {
			jit.Resources[i].Require = &lab.RequireSpec{Approval: &lab.ApprovalSpec{Approvers: []string{"sales"}, Max: "1h"}}
		}
	}
	applyNetwork(ctx, t, l, jit)
	testenv.Poll(t, 15*time.Second, "resources says db needs approval", func() error {
		out, err := l.Postern(ctx, lab.NodeClient, "resources")
		if err != nil || !strings.Contains(out, "needs approval (postern request db") {
			return &cmdFailure{result{out: out, err: err}}
		}
		return nil
	})
	if r := sshHostname(t, lab.NodeClient); r.err == nil {
		t.Fatalf("ssh to db without an approved request succeeded:\n%s", r.out)
	}

	const grant = 10 * time.Second
	if out, err := l.Postern(ctx, lab.NodeClient, "request", "db", "--for", grant.String(), "--reason", "e2e: fix the inventory"); err != nil || !strings.Contains(out, "is pending") {
		t.Fatalf("postern request: %v\n%s", err, out)
	}
	out, err := l.Postern(ctx, lab.NodeClient, "requests", "--json")
	var mine []controlapi.AccessRequest
	if err != nil || json.Unmarshal([]byte(out), &mine) != nil || len(mine) == 0 || mine[0].State != "pending" {
		t.Fatalf("postern requests --json: %v\n%s", err, out)
	}
	id := mine[0].ID
	if out, err := l.Postern(ctx, lab.NodeClient, "approve", id); err == nil || !strings.Contains(out, "never decide their own") {
		t.Fatalf("alice approved her own request: %v\n%s", err, out)
	}
	if out, err := l.Postern(ctx, lab.NodeClientBob, "approve", id); err != nil || !strings.Contains(out, "Approved alice@example.com's request") {
		t.Fatalf("bob approves: %v\n%s", err, out)
	}
	out, err = l.Postern(ctx, lab.NodeClient, "requests", "--json")
	if err != nil || json.Unmarshal([]byte(out), &mine) != nil || len(mine) == 0 || mine[0].End.IsZero() {
		t.Fatalf("postern requests --json after approval: %v\n%s", err, out)
	}
	end := mine[0].End

	s := startSession(t)
	s.roundTrip("during-the-grant", 5*time.Second)
	if left := time.Until(end); left < 2*time.Second {
		t.Fatalf("the session started %v before the grant's end: too late to see it end", left)
	}
	if !s.ended(time.Until(end) + 3*time.Second) {
		t.Fatalf("the SSH session was still open 3 s after the grant ended at %s", end.Format(time.TimeOnly))
	}
	late := time.Since(end)
	t.Logf("the SSH session closed %v after the grant's end", late.Round(time.Millisecond))
	if late > time.Second {
		t.Fatalf("the SSH session closed %v after the grant ended, want within 1 s", late.Round(time.Millisecond))
	}
	if r := sshHostname(t, lab.NodeClient); r.err == nil {
		t.Fatalf("ssh after the grant ended succeeded:\n%s", r.out)
	}
}
