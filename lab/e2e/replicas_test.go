//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/lab"
	"postern.dev/postern/localapi"
)

// Issue 20: two controller replicas on one PostgreSQL; the one at the
// deployment's public URL is killed while a policy change is being applied
// through it and bob signs out and in again. A running SSH session is
// untouched; the change (applied again through the surviving replica)
// reaches the connectors (psql to db is refused, ssh still works); bob's
// sign-in completes through the surviving replica. A lab of its own.
func TestControllerReplicaFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l, err := lab.Start(ctx, lab.Options{BinDir: binDir(), Postern: true, ControllerReplicas: 2, Progress: os.Stderr,
		ReachableConnectors: lab.DefaultReachableConnectors})
	if err != nil {
		t.Fatalf("start a lab with two controller replicas: %v", err)
	}
	failed := true
	defer func() {
		if err := l.Close(failed || t.Failed()); err != nil {
			t.Errorf("close the lab: %v", err)
		}
	}()
	exec := func(node string, timeout time.Duration, args ...string) (string, error) {
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return l.Exec(c, node, args...)
	}
	if out, err := exec(lab.NodeClient, 20*time.Second, sshArgs(lab.DBName, "hostname")...); err != nil {
		t.Fatalf("ssh with both replicas up: %v\n%s", err, out)
	}
	s := startSessionOn(t, l)
	s.roundTrip("both-replicas", 5*time.Second)
	// Every part hears of replica B from its policy push.
	testenv.Poll(t, 20*time.Second, "alice's daemon knows replica B", func() error {
		b, err := os.ReadFile(l.ClientStateFile(lab.NodeClient, "controller.json"))
		if err != nil || !strings.Contains(string(b), lab.ControllerBURL()) {
			return fmt.Errorf("controller.json: %s (%v)", b, err)
		}
		return nil
	})

	// A policy change (db loses tcp/5432) is being applied through A and
	// bob signs out and in again, while A is killed.
	changed := l.Network.Clone()
	for i := range changed.Resources {
		if changed.Resources[i].Name == "db" {
			changed.Resources[i].Ports = []string{"tcp/22", "icmp"}
		}
	}
	applyA := make(chan error, 1)
	go func() { applyA <- l.Apply(ctx, changed) }()
	bob := make(chan error, 1)
	go func() {
		if out, err := l.Postern(ctx, lab.NodeClientBob, "logout"); err != nil {
			bob <- fmt.Errorf("logout: %w\n%s", err, out)
			return
		}
		bob <- l.Login(ctx, lab.NodeClientBob, lab.Bob)
	}()
	time.Sleep(50 * time.Millisecond) // both requests on their way to A
	if err := l.Kill(lab.ProgController); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("the apply through A ended with %v", <-applyA)
	s.roundTrip("replica-a-dead", 5*time.Second)
	// Whether A committed the change or not, applying it through B
	// converges every part on it.
	if err := l.ApplyVia(ctx, lab.ControllerBURL(), changed); err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	psql := append([]string{"env", "PGPASSWORD=" + l.PGPassword, "PGCONNECT_TIMEOUT=3"}, "psql", "-h", lab.DBName, "-U", lab.PGUser, "-d", lab.PGDatabase, "-c", "select 1")
	testenv.Poll(t, 30*time.Second, "psql refused after the change applied through replica B", func() error {
		if out, err := exec(lab.NodeClient, 10*time.Second, psql...); err == nil {
			return fmt.Errorf("psql still works: %s", out)
		}
		return nil
	})
	t.Logf("the change applied through B took effect %v after the apply (A killed %v before it)",
		time.Since(applied).Round(time.Millisecond), applied.Sub(killed).Round(time.Millisecond))
	s.roundTrip("after-the-change", 5*time.Second)
	if out, err := exec(lab.NodeClient, 20*time.Second, sshArgs(lab.DBName, "hostname")...); err != nil {
		t.Fatalf("new ssh with replica A dead: %v\n%s", err, out)
	}
	if err := l.WaitStatus(ctx, lab.NodeClient, 60*time.Second, "alice's daemon reaches a controller", func(st localapi.Status) bool {
		return st.ControllerReachable
	}); err != nil {
		t.Fatal(err)
	}

	// Bob's sign-out and sign-in, begun while A died, went to B.
	if err := <-bob; err != nil {
		t.Fatalf("bob signing out and in while replica A died: %v", err)
	}
	if err := l.WaitClientState(ctx, lab.NodeClientBob, 60*time.Second, localapi.StateConnected); err != nil {
		t.Fatal(err)
	}
	s.roundTrip("end", 5*time.Second)
	failed = false
}
