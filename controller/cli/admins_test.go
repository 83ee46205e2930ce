package controllercli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminsCommands: add, list, token (used as the token file of another
// command, its role enforced), revoke-token and remove.
func TestAdminsCommands(t *testing.T) {
	c, dir, u := serveController(t)
	ctx := context.Background()

	ca := filepath.Join(dir, "data", "ca.pem")
	common := []string{"--url", u, "--ca", ca, "--token-file", filepath.Join(dir, "data", "admin-token")}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("correct horse battery\n"), 0o600)
	if code, out, errs := run(append([]string{"admins", "add", "ann@example.com", "--role", "auditor", "--password-file", pw}, common...)...); code != 0 || !strings.Contains(out, "Added ann@example.com (auditor)") {
		t.Fatalf("add: %d %q %q", code, out, errs)
	}
	if code, _, errs := run(append([]string{"admins", "add", "x", "--role", "god"}, common...)...); code != 1 || !strings.Contains(errs, `role "god" is not one of owner, admin, approver, auditor`) {
		t.Fatalf("bad role: %d %q", code, errs)
	}
	code, tok, errs := run(append([]string{"admins", "token", "ann@example.com", "--name", "siem"}, common...)...)
	if code != 0 || !strings.HasPrefix(tok, "pak_") || !strings.Contains(errs, "(auditor)") {
		t.Fatalf("token: %d %q %q", code, tok, errs)
	}
	tf := filepath.Join(dir, "ann-token")
	os.WriteFile(tf, []byte(tok), 0o600)
	annFlags := []string{"--url", u, "--ca", ca, "--token-file", tf}
	// The auditor's token reads but cannot mint.
	if code, out, errs := run(append([]string{"admins", "list"}, annFlags...)...); code != 0 || !strings.Contains(out, "ann@example.com  auditor  yes") || !strings.Contains(out, "atk_") {
		t.Fatalf("list as auditor: %d %q %q", code, out, errs)
	}
	if code, _, errs := run(append([]string{"connector-token", "corp-a"}, annFlags...)...); code != 1 || !strings.Contains(errs, "403") {
		t.Fatalf("auditor minted: %d %q", code, errs)
	}
	ts, _ := c.ListAdminTokens(ctx)
	if code, _, errs := run(append([]string{"admins", "revoke-token", ts[0].ID}, common...)...); code != 0 {
		t.Fatalf("revoke-token: %d %q", code, errs)
	}
	if code, _, errs := run(append([]string{"admins", "list"}, annFlags...)...); code != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("revoked token still works: %d %q", code, errs)
	}
	if code, _, errs := run(append([]string{"admins", "remove", "ann@example.com"}, common...)...); code != 0 {
		t.Fatalf("remove: %d %q", code, errs)
	}
	if as, _ := c.ListAdmins(ctx); len(as) != 0 {
		t.Fatalf("admins left: %+v", as)
	}
	if code, _, _ := run(append([]string{"admins", "frobnicate"}, common...)...); code != 2 {
		t.Fatalf("unknown action: %d", code)
	}
}
