package tray_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"postern.dev/postern/connector"
	"postern.dev/postern/controller"
	"postern.dev/postern/controller/oidcauth/oidctest"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// The test binary doubles as the "browser" that xdg-open starts for the
// real postern-tray program: with these variables set it signs in on the
// identity provider's page at the URL it is given, and exits.
const (
	envBrowser         = "POSTERN_TRAY_TEST_BROWSER"
	envBrowserLogin    = "POSTERN_TRAY_TEST_LOGIN"
	envBrowserPassword = "POSTERN_TRAY_TEST_PASSWORD"
)

func TestMain(m *testing.M) {
	if os.Getenv(envBrowser) == "1" && len(os.Args) == 2 {
		if _, err := oidctest.NewBrowser().SignIn(os.Args[1], os.Getenv(envBrowserLogin), os.Getenv(envBrowserPassword)); err != nil {
			fmt.Fprintln(os.Stderr, "test browser:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// labYAML gives the identity provider's "engineering" group three
// resources behind connector corp-a: a web app, one that needs a second
// factor and one that needs an approval (refused until then).
const labYAML = `remote_networks:
  - name: corp
    connectors: [corp-a]
groups:
  - name: engineering
    users: []
  - name: sre-leads
    users: [bob@example.com]
users:
  - email: bob@example.com
    password: "bob-password-12"
resources:
  - name: wiki
    address: wiki.corp.internal
    network: corp
    ports: [tcp/443]
    groups: [engineering]
  - name: mfa-db
    address: 127.0.0.1
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
    require:
      mfa: 1h
  - name: prod-db
    address: 127.0.0.2
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
    require:
      approval: {approvers: [sre-leads], max: 2h}
`

// realLab is a real controller (with single sign-on at a real OpenID
// provider) and connector in process, and the real posternd program in
// SOCKS5 mode (no root needed), which trusts the controller's CA as a
// system root (SSL_CERT_FILE), as a deployment with a company CA does.
type realLab struct {
	t        *testing.T
	url      string // the controller
	caFile   string
	posternd string // the built program
	state    string // posternd's state directory
	socket   string
	daemon   *exec.Cmd
	exited   chan error
	out      *testenv.SyncBuffer
	// systemRoots: posternd trusts the controller's CA as a system root.
	systemRoots bool
	// stopConnector stops the connector (the controller then reports it
	// offline and posternd is degraded).
	stopConnector func()
}

// buildProgram builds a command of this module into dir (without the race
// detector: these are the programs as shipped).
func buildProgram(t *testing.T, dir, name string) string {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		testenv.RequireTools(t, "go")
		goBin, _ = exec.LookPath("go")
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command(goBin, "build", "-o", bin, "postern.dev/postern/cmd/"+name).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

func startRealLab(t *testing.T) *realLab { return startRealLabCA(t, true) }

// startRealLabCA is startRealLab; with systemRoots false posternd does not
// trust the controller's CA until a sign-in hands it over (postern login
// --ca).
func startRealLabCA(t *testing.T, systemRoots bool) *realLab {
	t.Helper()
	idp := oidctest.Start(t, oidctest.Options{
		Clients:  []oidctest.Client{{ID: "postern", Secret: "postern-secret"}},
		Accounts: map[string]oidctest.Account{"alice": {Password: "alice-pw", Email: "alice@example.com", Groups: []string{"engineering"}}},
	})
	dir := t.TempDir()
	l := &realLab{t: t, systemRoots: systemRoots, posternd: buildProgram(t, dir, "posternd"), state: filepath.Join(dir, "posternd-state")}
	l.socket = filepath.Join(l.state, localapi.SocketName)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.url = "https://" + ln.Addr().String()
	ctl, err := controller.Open(controller.Config{
		DataDir: filepath.Join(dir, "controller"), PublicURL: l.url, Logger: testenv.Logger(t), HeartbeatInterval: time.Second,
		OIDC: &controller.OIDCConfig{Issuer: idp.Issuer, ClientID: "postern", ClientSecret: "postern-secret", Scopes: []string{"groups"}},
	})
	if err != nil {
		t.Fatalf("open controller: %v", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = ctl.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; ctl.Close() })
	if _, err := ctl.ApplyYAML(ctx, []byte(labYAML), false); err != nil {
		t.Fatalf("apply: %v", err)
	}
	l.caFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(l.caFile, ctl.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	tok, err := ctl.EnrollmentToken("connector", "corp-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cdir := filepath.Join(dir, "connector")
	if _, err := connector.Enroll(ctx, cdir, tok, connector.EnrollOptions{}); err != nil {
		t.Fatalf("enroll connector: %v", err)
	}
	c, err := connector.Open(connector.Config{StateDir: cdir, ListenUDP: "127.0.0.1:0", Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatalf("open connector: %v", err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	cdone := make(chan error, 1)
	go func() { cdone <- c.Run(cctx) }()
	var once sync.Once
	l.stopConnector = func() { once.Do(func() { ccancel(); <-cdone }) }
	t.Cleanup(l.stopConnector)

	l.startDaemon()
	t.Cleanup(l.stopDaemon)
	return l
}

// startDaemon starts posternd and waits until its local API answers.
func (l *realLab) startDaemon() {
	t := l.t
	t.Helper()
	l.out = &testenv.SyncBuffer{}
	cmd := exec.Command(l.posternd, "--state", l.state, "--socks5", "127.0.0.1:0", "--direct-only")
	cmd.Env = append(os.Environ(), localapi.EnvSocket+"=")
	if l.systemRoots {
		cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+l.caFile)
	}
	cmd.Stdout, cmd.Stderr = l.out, l.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start posternd: %v", err)
	}
	l.daemon, l.exited = cmd, make(chan error, 1)
	go func(exited chan error) { exited <- cmd.Wait() }(l.exited)
	c := localapi.NewClient(l.socket)
	testenv.Poll(t, 20*time.Second, "posternd's local API", func() error {
		select {
		case err := <-l.exited:
			l.daemon = nil
			t.Fatalf("posternd exited: %v\n%s", err, l.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Status(ctx)
		return err
	})
}

// stopDaemon stops posternd the way systemd does (SIGTERM) and waits.
func (l *realLab) stopDaemon() {
	if l.daemon == nil {
		return
	}
	_ = l.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-l.exited:
		if err != nil {
			l.t.Errorf("posternd exited with %v\n%s", err, l.out.String())
		}
	case <-time.After(15 * time.Second):
		_ = l.daemon.Process.Kill()
		<-l.exited
		l.t.Errorf("posternd did not stop on SIGTERM\n%s", l.out.String())
	}
	l.daemon = nil
}

// status is posternd's status now.
func (l *realLab) status() localapi.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := localapi.NewClient(l.socket).Status(ctx)
	if err != nil {
		l.t.Fatalf("posternd status: %v", err)
	}
	return st
}

// hasLabel reports whether a resource label names the resource and says
// what is missing.
func hasLabel(labels []string, prefix, note string) bool {
	for _, s := range labels {
		if strings.HasPrefix(s, prefix) && strings.Contains(s, note) {
			return true
		}
	}
	return false
}
