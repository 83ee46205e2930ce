package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
)

// Network-namespace labs for the relay on real-host layouts (issue 13 item
// 2). Only 198.51.100.0/24, 203.0.113.0/24 and 198.18.0.0/15 are used; the
// veth pairs are created inside lab namespaces, never in the machine's own.

const labHelperEnv = "POSTERN_RELAY_LAB_CONFIG"

type nsLab struct {
	t     *testing.T
	id    string
	names []string
	mu    sync.Mutex
	procs []*exec.Cmd
	logs  []*testenv.SyncBuffer
}

func newNSLab(t *testing.T, names ...string) *nsLab {
	t.Helper()
	testenv.RequireNetns(t, "nft")
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	l := &nsLab{t: t, id: hex.EncodeToString(rb[:]), names: names}
	t.Cleanup(func() {
		for i, p := range l.procs {
			if p.Process != nil {
				_ = p.Process.Kill()
				_ = p.Wait()
			}
			if t.Failed() {
				t.Logf("helper %d output:\n%s", i, l.logs[i].String())
			}
		}
		for _, n := range names {
			if err := netnstest.Remove(context.Background(), l.ns(n)); err != nil {
				t.Errorf("remove lab namespace: %v", err)
			}
		}
	})
	for _, n := range names {
		if err := netnstest.Create(context.Background(), l.ns(n), "# postern relay lab: no resolver\n", ""); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (l *nsLab) ns(n string) string { return "prl" + l.id + "-" + n }

func (l *nsLab) sh(args ...string) {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// link joins two namespaces with a veth pair created inside namespace a.
func (l *nsLab) link(a, aName, aAddr, b, bName, bAddr string) {
	l.t.Helper()
	netnstest.Link(l.t, l.ns(a), aName, aAddr, l.ns(b), bName, bAddr)
}

// in runs f on a thread switched into namespace n: sockets f creates stay
// in that namespace. f runs on another goroutine and reports failures with
// its error.
func (l *nsLab) in(n string, f func() error) {
	l.t.Helper()
	if err := netnstest.Do(l.ns(n), f); err != nil {
		l.t.Fatal(err)
	}
}

// labRelayConfig is what the relay helper process runs with.
type labRelayConfig struct {
	CACert    []byte
	JWKS      json.RawMessage
	Issuer    string
	Secret    string
	TLSCert   []byte
	TLSSeed   []byte
	ListenUDP string
	ListenTLS string
	PublicIP  string
	RelayIP   string
}

// TestRelayLabHelper runs a relay inside a lab namespace; it is skipped in a
// normal run.
func TestRelayLabHelper(t *testing.T) {
	path := os.Getenv(labHelperEnv)
	if path == "" {
		t.Skip("relay lab helper process only")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c labRelayConfig
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(c.CACert)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.TLSCert)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ListenUDP: c.ListenUDP, ListenTLS: c.ListenTLS, PublicIP: net.ParseIP(c.PublicIP),
		Realm: "postern.test", CA: ca, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TLSCert: tls.Certificate{Certificate: [][]byte{c.TLSCert}, PrivateKey: ed25519.NewKeyFromSeed(c.TLSSeed), Leaf: leaf}}
	if c.RelayIP != "" {
		cfg.RelayIP = net.ParseIP(c.RelayIP)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetCredentials(c.Secret, c.Issuer, c.JWKS); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	os.Stdout.WriteString("\nREADY\n")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the test ends
}

// startRelay runs the relay helper in namespace n and waits until it listens.
func (l *nsLab) startRelay(f *fixture, n string, c labRelayConfig) {
	t := l.t
	t.Helper()
	c.CACert, c.JWKS, c.Issuer, c.Secret = f.ca.Cert.Raw, f.jwks, f.signer.Issuer, secret
	c.TLSCert, c.TLSSeed = f.rcert.Certificate[0], f.rcert.PrivateKey.(ed25519.PrivateKey).Seed()
	b, _ := json.Marshal(c)
	path := filepath.Join(t.TempDir(), "relay.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.ns(n), os.Args[0], "-test.run=^TestRelayLabHelper$", "-test.v")
	cmd.Env = append(os.Environ(), labHelperEnv+"="+path)
	logs := &testenv.SyncBuffer{}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.procs, l.logs = append(l.procs, cmd), append(l.logs, logs)
	testenv.WaitReady(t, "relay helper in "+n, stdout, 20*time.Second)
}
