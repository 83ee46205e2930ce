package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/client"
	"postern.dev/postern/connector"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller"
	controllercli "postern.dev/postern/controller/cli"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

type resolver map[string]string

func (r resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, ok := r[strings.TrimSuffix(host, ".")]; ok {
		return []netip.Addr{netip.MustParseAddr(ip)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

var cliAccessYAML = testenv.ApproverPolicy("corp-a") + `resources:
  - name: mfa-db
    address: 127.0.0.1
    network: corp
    ports: [tcp/%[1]d]
    groups: [engineering]
    require:
      mfa: 1h
  - name: prod-db
    address: 127.0.0.2
    network: corp
    ports: [tcp/%[2]d]
    groups: [engineering]
    require:
      approval: {approvers: [sre-leads], max: 2h}
`

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startAccessLab runs a controller and a connector in process and returns
// the controller URL, its CA file and admin token file.
func startAccessLab(t *testing.T, clk *testenv.Clock, mfaPort, prodPort uint16) (url, caFile, tokFile string) {
	return startAccessLabAt(t, clk, "127.0.0.1", mfaPort, prodPort)
}

// startAccessLabAt is startAccessLab with the controller's public URL
// naming host (which must resolve to 127.0.0.1).
func startAccessLabAt(t *testing.T, clk *testenv.Clock, host string, mfaPort, prodPort uint16) (url, caFile, tokFile string) {
	return startLab(t, clk, host, fmt.Sprintf(cliAccessYAML, mfaPort, prodPort), nil)
}

// startLab runs a controller with yaml applied and connector corp-a
// (its configuration changed by tune, if any) in process and returns the
// controller URL, its CA file and admin token file.
func startLab(t *testing.T, clk *testenv.Clock, host, yaml string, tune func(*connector.Config)) (url, caFile, tokFile string) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url = "https://" + net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	ctl, err := controller.Open(controller.Config{DataDir: t.TempDir(), PublicURL: url, Logger: discard(), HeartbeatInterval: time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = ctl.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; ctl.Close() })
	if _, err := ctl.ApplyYAML(ctx, []byte(yaml), false); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, tokFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "admin-token")
	os.WriteFile(caFile, ctl.CACertPEM(), 0o600)
	os.WriteFile(tokFile, []byte(ctl.AdminToken()+"\n"), 0o600)
	tok, err := ctl.EnrollmentToken("connector", "corp-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cdir := t.TempDir()
	if _, err := connector.Enroll(ctx, cdir, tok, connector.EnrollOptions{}); err != nil {
		t.Fatal(err)
	}
	ccfg := connector.Config{StateDir: cdir, ListenUDP: "127.0.0.1:0", Logger: discard(), Now: clk.Now, Resolver: resolver{}}
	if tune != nil {
		tune(&ccfg)
	}
	c, err := connector.Open(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	cdone := make(chan error, 1)
	go func() { cdone <- c.Run(cctx) }()
	t.Cleanup(func() { ccancel(); <-cdone })
	return url, caFile, tokFile
}

// startDaemon runs a signed-in daemon with its local API; it returns the daemon and socket.
func startDaemon(t *testing.T, url, caFile, email, password string) (*client.Daemon, string) {
	d, sock := serveDaemon(t, client.Config{})
	ca, _ := os.ReadFile(caFile)
	if _, err := d.Login(context.Background(), localapi.LoginRequest{ControllerURL: url, CAPEM: string(ca), Email: email, Password: password}); err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	return d, sock
}

func oathtool(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	out, err := exec.Command("oathtool", "--totp", "-b", "--now", at.UTC().Format("2006-01-02 15:04:05 UTC"), secret).Output()
	if err != nil {
		t.Fatalf("oathtool (scripts/install-deps.sh installs it): %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestAccessCommands drives postern mfa, request, requests, approve, deny,
// resources and postern-controller requests against a real controller,
// connector and daemons, with codes from oathtool.
func TestAccessCommands(t *testing.T) {
	_, mfaPort := testenv.EchoTCP(t, "127.0.0.1:0")
	_, prodPort := testenv.EchoTCP(t, "127.0.0.2:0")
	clk := &testenv.Clock{}
	url, caFile, tokFile := startAccessLab(t, clk, mfaPort, prodPort)
	alice, aliceSock := startDaemon(t, url, caFile, "alice@example.com", "alice-password-1")
	_, bobSock := startDaemon(t, url, caFile, "bob@example.com", "bob-password-12")
	as := func(sock, stdin string, args ...string) (int, string, string) {
		return runCLI(t, stdin, append([]string{"--socket", sock}, args...)...)
	}
	dial := func(host string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		port := mfaPort
		if host == "127.0.0.2" {
			port = prodPort
		}
		c, err := alice.DialTCP(ctx, host, port)
		if err == nil {
			c.Close()
		}
		return err
	}

	// What is missing and what to do, per resource.
	testenv.Eventually(t, 15*time.Second, "resources with access notes", func() bool {
		_, out, _ := as(aliceSock, "", "resources")
		return strings.Contains(out, "needs MFA (postern mfa)") && strings.Contains(out, "needs approval (postern request prod-db)")
	})
	testenv.Eventually(t, 15*time.Second, "connector online", func() bool {
		err := dial("127.0.0.1")
		return err != nil && strings.Contains(err.Error(), "mfa required")
	})
	if _, out, _ := as(aliceSock, "", "status"); !strings.Contains(out, "Access needed:") || !strings.Contains(out, "prod-db: needs approval") {
		t.Errorf("status lacks the access notes:\n%s", out)
	}

	// MFA: enroll prints the URI and a QR code; codes come from oathtool.
	code, out, stderr := as(aliceSock, "", "mfa", "enroll")
	secret := regexp.MustCompile(`Secret: ([A-Z2-7]+)`).FindStringSubmatch(out)
	if code != 0 || !strings.Contains(out, "otpauth://totp/Postern:alice@example.com") || !strings.ContainsAny(out, "█▀▄") || secret == nil {
		t.Fatalf("mfa enroll: %d\n%s\n%s", code, out, stderr)
	}
	otp := oathtool(t, secret[1], clk.Now())
	if code, out, stderr = as(aliceSock, "", "mfa", "--code", otp); code != 0 || !strings.Contains(out, "Second factor accepted") {
		t.Fatalf("mfa --code: %d %s %s", code, out, stderr)
	}
	if code, _, stderr = as(aliceSock, "", "mfa", "--code", otp); code != 1 || !strings.Contains(stderr, "already used") {
		t.Fatalf("replayed code: %d %s", code, stderr)
	}
	clk.Advance(30 * time.Second)
	if code, out, stderr = as(aliceSock, oathtool(t, secret[1], clk.Now())+"\n", "mfa"); code != 0 || !strings.Contains(stderr, "TOTP code:") || !strings.Contains(out, "last second factor") {
		t.Fatalf("mfa with a prompted code: %d %s %s", code, out, stderr)
	}
	// WebAuthn needs a controller URL with a host name (see TestMFAWebAuthnCommands).
	if code, _, stderr = as(aliceSock, "", "mfa", "--webauthn"); code != 1 || !strings.Contains(stderr, "WebAuthn is not available on this controller") || !strings.Contains(stderr, "IP address 127.0.0.1") {
		t.Fatalf("mfa --webauthn: %d %s", code, stderr)
	}
	testenv.Eventually(t, 15*time.Second, "mfa-db reachable after step-up", func() bool { return dial("127.0.0.1") == nil })

	// JIT: request, self-approval refused, approve by bob, reach.
	if code, _, stderr = as(aliceSock, "", "request", "prod-db", "--for", "3h", "--reason", "deploy"); code != 1 || !strings.Contains(stderr, "longer than the 2h") {
		t.Fatalf("request over max: %d %s", code, stderr)
	}
	if code, out, stderr = as(aliceSock, "", "request", "prod-db", "--for", "2h", "--reason", "deploy fix 42"); code != 0 || !strings.Contains(out, "is pending") {
		t.Fatalf("request: %d %s %s", code, out, stderr)
	}
	var mine []controlapi.AccessRequest
	_, out, _ = as(aliceSock, "", "requests", "--json")
	if err := json.Unmarshal([]byte(out), &mine); err != nil || len(mine) != 1 || mine[0].State != "pending" {
		t.Fatalf("requests --json: %v %s", err, out)
	}
	id := mine[0].ID
	if code, _, stderr = as(aliceSock, "", "approve", id); code != 1 || !strings.Contains(stderr, "never decide their own") {
		t.Fatalf("self-approval: %d %s", code, stderr)
	}
	if _, out, _ = as(bobSock, "", "requests"); !strings.Contains(out, "you may approve: postern approve "+id) {
		t.Fatalf("bob's requests:\n%s", out)
	}
	if code, out, stderr = as(bobSock, "", "approve", id, "--for", "1h"); code != 0 || !strings.Contains(out, "Approved alice@example.com's request") {
		t.Fatalf("approve: %d %s %s", code, out, stderr)
	}
	testenv.Eventually(t, 15*time.Second, "approved note", func() bool {
		_, out, _ := as(aliceSock, "", "resources")
		return strings.Contains(out, "approved until ") && strings.Contains(out, "by bob@example.com")
	})
	testenv.Eventually(t, 15*time.Second, "prod-db reachable after approval", func() bool { return dial("127.0.0.2") == nil })

	// Deny needs a reason; the admin CLI lists and denies.
	if code, _, stderr = as(bobSock, "", "deny", id); code != 2 || !strings.Contains(stderr, "reason") {
		t.Fatalf("deny without reason: %d %s", code, stderr)
	}
	if code, _, _ = as(bobSock, "", "request", "prod-db", "--for", "1h", "--reason", "on call"); code != 0 {
		t.Fatal("bob's request")
	}
	var outb, errb strings.Builder
	admin := []string{"--url", url, "--ca", caFile, "--token-file", tokFile}
	if rc := controllercli.Main(append([]string{"requests", "list"}, admin...), &outb, &errb); rc != 0 || !strings.Contains(outb.String(), id) || !strings.Contains(outb.String(), "pending") {
		t.Fatalf("requests list: %d %s %s", rc, outb.String(), errb.String())
	}
	var bobs []controlapi.AccessRequest
	_, out, _ = as(bobSock, "", "requests", "--json")
	json.Unmarshal([]byte(out), &bobs)
	bobID := ""
	for _, r := range bobs {
		if r.Requester == "bob@example.com" {
			bobID = r.ID
		}
	}
	outb.Reset()
	if rc := controllercli.Main(append([]string{"requests", "deny", bobID, "--reason", "use the runbook"}, admin...), &outb, &errb); rc != 0 || !strings.Contains(outb.String(), "Denied bob@example.com") {
		t.Fatalf("requests deny: %d %s %s", rc, outb.String(), errb.String())
	}
	if rc := controllercli.Main(append([]string{"requests", "approve"}, admin...), &outb, &errb); rc != 2 {
		t.Fatalf("requests approve without ID: %d", rc)
	}
	if _, out, _ = as(bobSock, "", "requests"); !strings.Contains(out, "denied") || !strings.Contains(out, "use the runbook") {
		t.Fatalf("bob's requests after deny:\n%s", out)
	}

	// Posture: the daemon's own probes, signed with its device key.
	if code, out, stderr = as(aliceSock, "", "posture"); code != 0 || !strings.Contains(out, "OS:              linux") || !strings.Contains(out, "reported by this device itself") {
		t.Fatalf("posture: %d %s %s", code, out, stderr)
	}
	// Remove: with a recent step-up no code is asked.
	if code, out, stderr = as(aliceSock, "", "mfa", "remove"); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("mfa remove: %d %s %s", code, out, stderr)
	}
	if _, out, _ = as(aliceSock, "", "mfa", "status"); !strings.Contains(out, "not enrolled") {
		t.Fatalf("mfa status after remove: %s", out)
	}
}
