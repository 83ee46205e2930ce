package cli

import (
	"context"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// TestMFAWebAuthnCommands drives postern mfa enroll --webauthn and postern
// mfa --webauthn against a real controller, connector and daemon, with
// headless Chromium and its virtual authenticator as the browser the
// command opens: a flow to a resource that requires MFA is refused before
// the step-up and passes the real connector after it.
func TestMFAWebAuthnCommands(t *testing.T) {
	_, mfaPort := testenv.EchoTCP(t, "127.0.0.1:0")
	_, prodPort := testenv.EchoTCP(t, "127.0.0.2:0")
	clk := &testenv.Clock{}
	url, caFile, _ := startAccessLabAt(t, clk, "localhost", mfaPort, prodPort)
	alice, sock := startDaemon(t, url, caFile, "alice@example.com", "alice-password-1")
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	br := testenv.Chromium(t, url, roots)

	// The command's browser is Chromium; the page's verdict comes back here.
	type page struct {
		result, status string
		err            error
	}
	pages := make(chan page, 1)
	old := openBrowser
	openBrowser = func(u string) error {
		go func() {
			res, status, err := br.WebAuthnPage(u, 30*time.Second)
			pages <- page{res, status, err}
		}()
		return nil
	}
	t.Cleanup(func() { openBrowser = old })
	pageSays := func(want string) {
		t.Helper()
		select {
		case p := <-pages:
			if p.err != nil || p.result != want {
				t.Fatalf("page: %s %q %v, want %s", p.result, p.status, p.err, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the command never opened the page")
		}
	}

	as := func(args ...string) (int, string, string) {
		return runCLI(t, "", append([]string{"--socket", sock}, args...)...)
	}
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := alice.DialTCP(ctx, "127.0.0.1", mfaPort)
		if err == nil {
			c.Close()
		}
		return err
	}

	// Before: no key to step up with, and mfa-db is refused by the connector.
	if code, _, stderr := as("mfa", "--webauthn"); code != 1 || !strings.Contains(stderr, "no security key enrolled (postern mfa enroll --webauthn)") {
		t.Fatalf("mfa --webauthn without a key: %d %s", code, stderr)
	}
	testenv.Eventually(t, 15*time.Second, "mfa-db refused for lack of MFA", func() bool {
		err := dial()
		return err != nil && strings.Contains(err.Error(), "mfa required")
	})

	// Enroll: the command opens the page, waits, and reports.
	code, out, stderr := as("mfa", "enroll", "--webauthn")
	if code != 0 || !strings.Contains(out, "Opening your browser to enroll a security key") || !strings.Contains(out, "Security key enrolled") || !strings.Contains(out, "Security keys: 1") {
		t.Fatalf("mfa enroll --webauthn: %d\n%s\n%s", code, out, stderr)
	}
	pageSays("done")
	testenv.Eventually(t, 15*time.Second, "mfa-db reachable after enrollment", func() bool { return dial() == nil })

	// Past the window: refused again; step up with the key: allowed.
	clk.Advance(2 * time.Hour)
	testenv.Eventually(t, 15*time.Second, "mfa-db refused after the window", func() bool {
		err := dial()
		return err != nil && strings.Contains(err.Error(), "mfa required")
	})
	code, out, stderr = as("mfa", "--webauthn")
	if code != 0 || !strings.Contains(out, "Second factor accepted") {
		t.Fatalf("mfa --webauthn: %d\n%s\n%s", code, out, stderr)
	}
	pageSays("done")
	testenv.Eventually(t, 15*time.Second, "mfa-db reachable after the step-up", func() bool { return dial() == nil })

	if code, _, stderr := as("mfa", "--webauthn", "--code", "123456"); code == 0 || !strings.Contains(stderr, "not both") {
		t.Fatalf("--webauthn with --code: %d %s", code, stderr)
	}
	// Removing the keys right after a step-up works.
	if code, out, stderr := as("mfa", "remove", "--webauthn"); code != 0 || !strings.Contains(out, "Security keys removed") {
		t.Fatalf("mfa remove --webauthn: %d %s %s", code, out, stderr)
	}
	if _, out, _ := as("mfa", "status"); !strings.Contains(out, "not enrolled") {
		t.Fatalf("mfa status after removal:\n%s", out)
	}
}
