package testenv

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// Browser is headless Chromium (Debian's chromium package, through
// chromedp) with a virtual WebAuthn authenticator: a CTAP2 platform
// ("internal") authenticator with user verification that verifies the user
// and simulates presence by itself. It is a real browser and a real
// authenticator, only without the person touching it.
type Browser struct {
	t    testing.TB
	ctx  context.Context
	auth webauthn.AuthenticatorID
}

// chromiumPath finds a Chromium or Chrome binary.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// serverSPKI connects to origin and returns the base64 SHA-256 of its
// certificate's public key, verified against roots.
func serverSPKI(origin string, roots *x509.CertPool) (string, error) {
	u, err := url.Parse(origin)
	if err != nil {
		return "", err
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: roots, ServerName: u.Hostname()})
	if err != nil {
		return "", fmt.Errorf("TLS to %s: %w", u.Host, err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// Chromium starts a headless Chromium for the test (skipped when Chromium
// is missing, failed under CI=true) that trusts the certificate origin
// serves (verified here against roots: a deployment CA Chromium does not
// know) and has a virtual authenticator. It runs without the sandbox only
// as root, where Chromium refuses to start with it. The browser stops when
// the test ends.
func Chromium(t testing.TB, origin string, roots *x509.CertPool) *Browser {
	t.Helper()
	path := chromiumPath()
	Require(t, path != "", "Chromium is required for WebAuthn browser tests (scripts/install-deps.sh installs Debian's chromium)")
	spki, err := serverSPKI(origin, roots)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.Headless,
		chromedp.Flag("ignore-certificate-errors-spki-list", spki), chromedp.UserDataDir(t.TempDir()))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &Browser{t: t, ctx: ctx}
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatalf("start Chromium (%s) and enable WebAuthn: %v", path, err)
	}
	res, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol:                    webauthn.AuthenticatorProtocolCtap2,
		Transport:                   webauthn.AuthenticatorTransportInternal,
		HasUserVerification:         true,
		IsUserVerified:              true,
		AutomaticPresenceSimulation: true,
	}})
	if err != nil {
		t.Fatalf("add virtual authenticator: %v", err)
	}
	b.auth = res.AuthenticatorID
	return b
}

// Credentials returns the credential ids the virtual authenticator holds.
func (b *Browser) Credentials() [][]byte {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: b.auth})
	if err != nil {
		b.t.Fatalf("virtual authenticator credentials: %v", err)
	}
	var ids [][]byte
	for _, c := range res.Credentials {
		ids = append(ids, c.CredentialID)
	}
	return ids
}

// BogusSignature makes the authenticator's next answers carry a zeroed
// signature (on) or real ones again (off).
func (b *Browser) BogusSignature(on bool) {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, webauthn.SetResponseOverrideBits, webauthn.SetResponseOverrideBitsParams{AuthenticatorID: b.auth, IsBogusSignature: &on}); err != nil {
		b.t.Fatalf("override signature: %v", err)
	}
}

// WebAuthnPage opens u, a ceremony page of the controller, and waits up to
// timeout for the page to finish: it sets data-result on its body to "done"
// or "failed" (watched by a MutationObserver); status is the page's status line.
func (b *Browser) WebAuthnPage(u string, timeout time.Duration) (result, status string, err error) {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	// From a blank page, so that a page still showing the last ceremony's
	// result is never read as this one's.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(u)); err != nil {
		return "", "", fmt.Errorf("open %s: %w", u, err)
	}
	result, err = chromedp.Run(ctx, chromedp.Evaluate[string](`new Promise((resolve) => {
		const res = () => document.body.dataset.result;
		if (res()) return resolve(res());
		new MutationObserver(() => { if (res()) resolve(res()); }).observe(document.body, {attributes: true});
	})`, chromedp.EvalAwaitPromise))
	text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(document.getElementById("status").textContent || document.getElementById("what").textContent || "")`))
	if err != nil {
		return "", text, fmt.Errorf("the page did not finish within %s (%q): %w", timeout, text, err)
	}
	return result, text, nil
}
