package controllercli

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOIDCFlagsAndFile(t *testing.T) {
	data := t.TempDir()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := addOIDCFlags(fs)
	// Without flags or DATA/oidc.yaml, single sign-on stays off.
	if oc, err := f.config(fs, data); err != nil || oc != nil {
		t.Fatalf("no OIDC settings: %+v, %v", oc, err)
	}

	// DATA/oidc.yaml is read; flags override it.
	os.WriteFile(filepath.Join(data, "oidc.yaml"), []byte(`oidc:
  issuer: https://idp.example.com
  client_id: from-file
  client_secret_file: secret
  groups_claim: groups
  scopes: [groups]
`), 0o600)
	fs = flag.NewFlagSet("serve", flag.ContinueOnError)
	f = addOIDCFlags(fs)
	args := []string{"--oidc-groups-claim", "roles", "--oidc-redirect-url", "http://127.0.0.1/cb", "--oidc-redirect-url", "https://portal.example.com/cb",
		"--oidc-refresh-interval", "2m", "--oidc-scopes", "groups,offline_access"}
	if _, err := parseInterleaved(fs, args); err != nil {
		t.Fatal(err)
	}
	oc, err := f.config(fs, data)
	if err != nil {
		t.Fatal(err)
	}
	if oc.Issuer != "https://idp.example.com" || oc.ClientID != "from-file" || oc.ClientSecretFile != filepath.Join(data, "secret") ||
		oc.GroupsClaim != "roles" || oc.RefreshInterval != 2*time.Minute ||
		!slices.Equal(oc.RedirectURLs, []string{"http://127.0.0.1/cb", "https://portal.example.com/cb"}) ||
		!slices.Equal(oc.Scopes, []string{"groups", "offline_access"}) {
		t.Fatalf("merged config = %+v", oc)
	}

	// Flags alone, no file.
	fs = flag.NewFlagSet("serve", flag.ContinueOnError)
	f = addOIDCFlags(fs)
	if _, err := parseInterleaved(fs, []string{"--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "p", "--oidc-client-secret-file", "/run/secrets/oidc"}); err != nil {
		t.Fatal(err)
	}
	oc, err = f.config(fs, t.TempDir())
	if err != nil || oc.Issuer != "https://idp.example.com" || oc.ClientID != "p" || oc.ClientSecretFile != "/run/secrets/oidc" || oc.GroupsClaim != "" {
		t.Fatalf("flags only: %+v, %v", oc, err)
	}
}

func TestServeOIDCErrors(t *testing.T) {
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Main(args, &out, &errb)
		return code, errb.String()
	}
	data := filepath.Join(t.TempDir(), "data")
	base := []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--public-url", "https://127.0.0.1:8443"}
	// The secret itself is never a flag.
	if code, errs := run(append(base, "--oidc-client-secret", "hunter2")...); code != 2 || !strings.Contains(errs, "oidc-client-secret") {
		t.Fatalf("--oidc-client-secret: %d %q", code, errs)
	}
	if code, errs := run(append(base, "--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "p")...); code != 1 || !strings.Contains(errs, "client secret is required") {
		t.Fatalf("no secret: %d %q", code, errs)
	}
	if code, errs := run(append(base, "--oidc-client-id", "p", "--oidc-client-secret-file", "/nonexistent")...); code != 1 || !strings.Contains(errs, "issuer is required") {
		t.Fatalf("no issuer: %d %q", code, errs)
	}
	if code, errs := run(append(base, "--oidc-config", filepath.Join(data, "missing.yaml"))...); code != 1 || !strings.Contains(errs, "missing.yaml") {
		t.Fatalf("missing --oidc-config: %d %q", code, errs)
	}
	if code, errs := run(append(base, "--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "p", "--oidc-client-secret-file", "/nonexistent")...); code != 1 || !strings.Contains(errs, "secret file") {
		t.Fatalf("missing secret file: %d %q", code, errs)
	}
}
