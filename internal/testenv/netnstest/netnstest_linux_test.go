package netnstest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// TestNamespacesLinkAndDo: two namespaces with their resolv.conf written,
// joined by a veth pair, carry a TCP connection opened by sockets made with
// Do; the namespaces and their /etc/netns directories are gone after the
// test's cleanup.
func TestNamespacesLinkAndDo(t *testing.T) {
	testenv.RequireNetns(t)
	var a, b string
	t.Run("lab", func(t *testing.T) {
		a = New(t, "pstnt", "nameserver 198.18.0.1\n")
		b = Unique("pstnt")
		Add(t, b, "", "198.18.0.1 a.test\n")
		if got, err := os.ReadFile(filepath.Join(EtcDir(a), "resolv.conf")); err != nil || string(got) != "nameserver 198.18.0.1\n" {
			t.Fatalf("resolv.conf of %s: %q, %v", a, got, err)
		}
		if got, err := os.ReadFile(filepath.Join(EtcDir(b), "resolv.conf")); err != nil || !strings.HasPrefix(string(got), "#") {
			t.Fatalf("resolv.conf of %s without a resolver: %q, %v", b, got, err)
		}
		if got, err := os.ReadFile(filepath.Join(EtcDir(b), "hosts")); err != nil || string(got) != "198.18.0.1 a.test\n" {
			t.Fatalf("hosts of %s: %q, %v", b, got, err)
		}
		// ip netns exec bind-mounts the namespace's resolv.conf.
		out, err := exec.Command("ip", "netns", "exec", a, "cat", "/etc/resolv.conf").CombinedOutput()
		if err != nil || string(out) != "nameserver 198.18.0.1\n" {
			t.Fatalf("/etc/resolv.conf inside %s: %q, %v", a, out, err)
		}
		Link(t, a, "eth0", "198.18.0.1/24", b, "eth0", "198.18.0.2/24")
		var ln net.Listener
		In(t, a, func() {
			var err error
			if ln, err = net.Listen("tcp", "198.18.0.1:0"); err != nil {
				t.Errorf("listen in %s: %v", a, err)
			}
		})
		if ln == nil {
			t.FailNow()
		}
		defer ln.Close()
		accepted := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				_, err = c.Write([]byte("hi"))
				c.Close()
			}
			accepted <- err
		}()
		err = Do(b, func() error {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 2)
			_, err = c.Read(buf)
			if string(buf) != "hi" {
				t.Errorf("read %q from %s", buf, a)
			}
			return err
		})
		if err != nil {
			t.Fatalf("dial from %s to %s: %v", b, a, err)
		}
		if err := <-accepted; err != nil {
			t.Fatal(err)
		}
		// The machine's own namespace never saw the pair.
		if out := MustIP(t, "-o", "link", "show"); strings.Contains(out, "pstA") || strings.Contains(out, "pstB") {
			t.Errorf("a temporary veth name in the machine's namespace:\n%s", out)
		}
	})
	for _, ns := range []string{a, b} {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after the test: %v", ns, err)
		}
		if _, err := os.Stat(EtcDir(ns)); !os.IsNotExist(err) {
			t.Errorf("%s still exists after the test: %v", EtcDir(ns), err)
		}
	}
}

// TestCreateRefusesAndCleansUp: Create refuses a bad name or a namespace
// that exists (leaving the existing one alone), and a veth whose rename
// fails leaves no temporary interface behind.
func TestCreateRefusesAndCleansUp(t *testing.T) {
	testenv.RequireNetns(t)
	ctx := context.Background()
	for _, bad := range []string{"", "..", "a/b", ".hidden", strings.Repeat("x", 65)} {
		if err := Create(ctx, bad, "", ""); err == nil {
			_ = Remove(ctx, bad)
			t.Errorf("Create(%q) succeeded", bad)
		}
	}
	ns := New(t, "pstnt", "")
	if err := Create(ctx, ns, "", ""); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Create of an existing namespace: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
		t.Fatalf("the refused Create removed the existing namespace: %v", err)
	}
	other := New(t, "pstnt", "")
	// 16 bytes: longer than an interface name may be, so the rename fails.
	if err := Veth(ctx, ns, "much-too-long-nm", other, "eth0"); err == nil {
		t.Fatal("Veth with an impossible name succeeded")
	}
	for _, n := range []string{ns, other} {
		if out := MustIP(t, "-n", n, "-o", "link", "show"); strings.Contains(out, "pstA") || strings.Contains(out, "pstB") {
			t.Errorf("temporary veth left in %s after a failed Veth:\n%s", n, out)
		}
	}
}

// TestTeardownKillsWhatRunsInside: Teardown ends a process still running in
// the namespace, then removes the namespace.
func TestTeardownKillsWhatRunsInside(t *testing.T) {
	testenv.RequireNetns(t)
	ctx := context.Background()
	ns := Unique("pstnt")
	if err := Create(ctx, ns, "", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(ctx, ns) })
	cmd := exec.Command("ip", "netns", "exec", ns, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	testenv.Eventually(t, 5*time.Second, "sleep to run in the namespace", func() bool {
		out, err := IP(ctx, "netns", "pids", ns)
		return err == nil && strings.TrimSpace(out) != ""
	})
	if err := Teardown(ctx, ns); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the process in the namespace survived Teardown")
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); !os.IsNotExist(err) {
		t.Errorf("namespace still exists after Teardown: %v", err)
	}
}
