package controllercli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller"
)

// serveController serves a controller with its data in dir/data on a
// loopback port until the test ends, and returns it with dir and its URL.
func serveController(t *testing.T) (c *controller.Controller, dir, url string) {
	t.Helper()
	dir = t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url = "https://" + ln.Addr().String()
	c, err = controller.Open(controller.Config{DataDir: filepath.Join(dir, "data"), PublicURL: url})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, dir, url
}

func TestAdminCommands(t *testing.T) {
	_, dir, u := serveController(t)

	yamlFile := filepath.Join(dir, "network.yaml")
	os.WriteFile(yamlFile, []byte(`remote_networks:
  - name: corp
    connectors: [corp-a]
groups:
  - name: eng
    users: [a@example.com]
resources:
  - name: db
    address: 192.0.2.10
    network: corp
    ports: [tcp/5432]
    groups: [eng]
service_accounts:
  - name: ci
    groups: [eng]
`), 0o644)
	common := []string{"--url", u, "--ca", filepath.Join(dir, "data", "ca.pem"), "--token-file", filepath.Join(dir, "data", "admin-token")}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run(append([]string{"apply"}, append(common, "-f", yamlFile, "--dry-run")...)...)
	if code != 0 || !strings.Contains(out, "+ resource db") || !strings.Contains(out, "Dry run") {
		t.Fatalf("dry run: %d %q %q", code, out, errs)
	}
	code, out, _ = run(append([]string{"apply"}, append(common, "-f", yamlFile)...)...)
	if code != 0 || !strings.Contains(out, "Applied: 5 to create") {
		t.Fatalf("apply: %d %q", code, out)
	}
	code, out, _ = run(append([]string{"apply"}, append(common, "-f", yamlFile)...)...)
	if code != 0 || !strings.Contains(out, "No changes") {
		t.Fatalf("re-apply: %d %q", code, out)
	}
	// NAME may come before or after the flags; stdout is only the token.
	code, out, _ = run(append([]string{"connector-token", "corp-a"}, common...)...)
	if code != 0 {
		t.Fatalf("connector-token: %d", code)
	}
	tok, err := controlapi.ParseEnrollmentToken(out)
	if err != nil || tok.Name != "corp-a" || strings.Count(out, "\n") != 1 {
		t.Fatalf("token output %q: %v", out, err)
	}
	code, _, errs = run(append([]string{"connector-token"}, append(common, "ghost")...)...)
	if code != 1 || !strings.Contains(errs, "ghost") {
		t.Fatalf("unknown connector: %d %q", code, errs)
	}
	code, out, _ = run(append([]string{"relay-token"}, append(common, "relay-1")...)...)
	if _, err := controlapi.ParseEnrollmentToken(out); code != 0 || err != nil {
		t.Fatalf("relay-token: %d %v", code, err)
	}
	code, out, _ = run(append([]string{"service-key"}, append(common, "ci")...)...)
	if code != 0 || !strings.Contains(out, "postern-service-key") {
		t.Fatalf("service-key: %d %q", code, out)
	}
	// Bad invocations.
	if code, _, _ := run("apply", "--url", u); code != 2 {
		t.Fatalf("apply without -f: %d", code)
	}
	if code, _, _ := run("bogus"); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
	bad := []string{"--url", u, "--ca", filepath.Join(dir, "data", "ca.pem"), "--token-file", yamlFile}
	if code, _, errs := run(append([]string{"connector-token", "corp-a"}, bad...)...); code != 1 || !strings.Contains(errs, "does not hold an admin token") {
		t.Fatalf("malformed admin token file: %d %q", code, errs)
	}
	wrong := filepath.Join(dir, "wrong-token")
	os.WriteFile(wrong, []byte("pat_wrong\n"), 0o600)
	bad[len(bad)-1] = wrong
	if code, _, errs := run(append([]string{"connector-token", "corp-a"}, bad...)...); code != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("wrong admin token: %d %q", code, errs)
	}
}

func TestServeDatabaseFlag(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	// Not a PostgreSQL URL: bad usage, nothing created.
	code := Main([]string{"serve", "--data", filepath.Join(dir, "d"), "--public-url", "https://127.0.0.1:1", "--database", "mysql://db/x"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--database") {
		t.Fatalf("bad --database: %d %q", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
		t.Fatalf("data directory created for a refused command line: %v", err)
	}
	// An unreachable database fails the start (exit 1) without showing the
	// password.
	errb.Reset()
	code = Main([]string{"serve", "--data", filepath.Join(dir, "e"), "--listen", "127.0.0.1:0", "--public-url", "https://127.0.0.1:1",
		"--database", "postgres://postern:s3cret@127.0.0.1:1/postern?connect_timeout=2"}, &out, &errb)
	if code != 1 || strings.Contains(errb.String(), "s3cret") || !strings.Contains(errb.String(), "127.0.0.1:1") {
		t.Fatalf("unreachable database: %d %q", code, errb.String())
	}
}

func TestServeTokenTTLFlag(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"5s", "2h", "0s", "-1m", "soon"} {
		var out, errb bytes.Buffer
		code := Main([]string{"serve", "--data", filepath.Join(dir, "d"), "--public-url", "https://127.0.0.1:1", "--token-ttl", v}, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "token-ttl") {
			t.Fatalf("--token-ttl %s: exit %d, %q", v, code, errb.String())
		}
		if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
			t.Fatalf("--token-ttl %s: data directory created for a refused command line: %v", v, err)
		}
	}
}

func TestServeExportConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "export.yaml"), []byte("sinks:\n  - {name: siem, type: syslog, address: nohost}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main([]string{"serve", "--data", dir, "--listen", "127.0.0.1:0", "--public-url", "https://127.0.0.1:1"}, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "export.yaml") || !strings.Contains(errb.String(), `sinks[0] (siem).address: "nohost"`) {
		t.Fatalf("bad DATA/export.yaml: exit %d, %q", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "postern.db")); !os.IsNotExist(err) {
		t.Fatalf("store created for a refused export configuration: %v", err)
	}
	errb.Reset()
	code = Main([]string{"serve", "--data", filepath.Join(dir, "d"), "--public-url", "https://127.0.0.1:1", "--export", filepath.Join(dir, "missing.yaml")}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--export") {
		t.Fatalf("missing --export file: exit %d, %q", code, errb.String())
	}
}
