package main

import (
	"bytes"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// notLocal returns an address from the documentation ranges that is not an
// address of this host.
func notLocal(t *testing.T) string {
	t.Helper()
	as, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	local := map[string]bool{}
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			local[n.IP.String()] = true
		}
	}
	for _, c := range []string{"203.0.113.199", "198.51.100.199", "192.0.2.199"} {
		if !local[c] {
			return c
		}
	}
	t.Fatal("every candidate documentation address is local")
	return ""
}

// Bad input exits non-zero with one line naming the flag, before any
// enrollment or controller contact (issue 13).
func TestBadFlagsExitWithOneLine(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "postern-relay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	far := notLocal(t)
	// A port that is certainly taken: one this test holds.
	held, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer heldTCP.Close()
	for _, c := range []struct {
		name string
		args []string
		flag string
	}{
		{"public IP not an IP", []string{"--public-ip", "relay.example"}, "--public-ip"},
		{"public IP missing", nil, "--public-ip"},
		{"relay IP not an IP", []string{"--public-ip", "127.0.0.1", "--relay-ip", "nope"}, "--relay-ip"},
		{"relay IP not local", []string{"--public-ip", "127.0.0.1", "--relay-ip", far}, "--relay-ip"},
		{"relay IP wildcard", []string{"--public-ip", "127.0.0.1", "--relay-ip", "0.0.0.0"}, "--relay-ip"},
		{"wildcard listener, public IP not local", []string{"--public-ip", far, "--listen-udp", ":0"}, "--relay-ip"},
		{"UDP address not bindable", []string{"--public-ip", "127.0.0.1", "--listen-udp", far + ":3478"}, "--listen-udp"},
		{"UDP port taken", []string{"--public-ip", "127.0.0.1", "--listen-udp", held.LocalAddr().String()}, "--listen-udp"},
		{"UDP address garbage", []string{"--public-ip", "127.0.0.1", "--listen-udp", "nonsense"}, "--listen-udp"},
		{"TLS port taken", []string{"--public-ip", "127.0.0.1", "--listen-udp", "127.0.0.1:0", "--listen-tls", heldTCP.Addr().String()}, "--listen-tls"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--state", t.TempDir()}, c.args...)
			cmd := exec.Command(bin, args...)
			var stderr, stdout bytes.Buffer
			cmd.Stderr, cmd.Stdout = &stderr, &stdout
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit: %v, want a non-zero exit; stderr %q", err, stderr.String())
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if strings.Contains(out, "\n") || out == "" {
				t.Fatalf("want exactly one line on stderr, got %q", stderr.String())
			}
			if !strings.Contains(out, c.flag) {
				t.Fatalf("error does not name %s: %q", c.flag, out)
			}
			t.Log(out)
		})
	}
}
