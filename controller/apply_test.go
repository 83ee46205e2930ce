package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func storeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	for _, f := range []string{"postern.db", "postern.db-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		h.Write([]byte(f))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestApplyRoundTripAndIdempotency(t *testing.T) {
	dir := t.TempDir()
	c := openController(t, dir)
	ctx := context.Background()

	dry, err := c.ApplyYAML(ctx, []byte(testYAML), true)
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Changes) != 13 {
		t.Fatalf("dry run plan: %+v", dry)
	}
	if len(c.model().Resources) != 0 {
		t.Fatal("dry run changed the store")
	}
	p, err := c.ApplyYAML(ctx, []byte(testYAML), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Changes) != 13 {
		t.Fatalf("first apply: %d changes\n%s", len(p.Changes), p)
	}
	for _, ch := range p.Changes {
		if ch.Op != "create" {
			t.Fatalf("first apply: unexpected %+v", ch)
		}
	}
	m := c.model()
	if len(m.Resources) != 3 || len(m.Connectors) != 3 || len(m.Groups) != 2 || len(m.Users) != 2 || len(m.ServiceAccounts) != 1 {
		t.Fatalf("model after apply: %d res %d con %d grp %d usr %d sa", len(m.Resources), len(m.Connectors), len(m.Groups), len(m.Users), len(m.ServiceAccounts))
	}
	if u := m.UserByEmail["alice@example.com"]; !strings.HasPrefix(u.PasswordHash, "$argon2id$") || !verifyPassword(u.PasswordHash, "correct horse") {
		t.Fatalf("password not stored as argon2id: %q", u.PasswordHash)
	}
	before := storeDigest(t, dir)
	p2, err := c.ApplyYAML(ctx, []byte(testYAML), false)
	if err != nil {
		t.Fatal(err)
	}
	if !p2.Empty() {
		t.Fatalf("second apply not empty:\n%s", p2)
	}
	if storeDigest(t, dir) != before {
		t.Fatal("empty apply changed the store")
	}
	if !strings.Contains(p2.String(), "No changes") {
		t.Fatalf("empty plan text: %q", p2)
	}

	// Update one resource, delete another and a service account, change a password.
	changed := strings.Replace(testYAML, "tcp/8000-8100", "tcp/8000-8200", 1)
	changed = strings.Replace(changed, `  - name: labnet
    address: 198.51.100.0/24
    network: lab
    groups: [ops]
`, "", 1)
	changed = strings.Replace(changed, `service_accounts:
  - name: ci
    groups: [engineering]
`, "", 1)
	changed = strings.Replace(changed, "battery staple", "new password", 1)
	p3, err := c.ApplyYAML(ctx, []byte(changed), false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Change{}
	for _, ch := range p3.Changes {
		got[ch.Op+" "+ch.Kind+" "+ch.Name] = ch
	}
	want := []string{"update resource web", "delete resource labnet", "delete service_account ci", "update user bob@example.com"}
	if len(got) != len(want) {
		t.Fatalf("plan: %s", p3)
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			t.Fatalf("plan lacks %q:\n%s", w, p3)
		}
	}
	if f := got["update resource web"].Fields; len(f) != 1 || f[0] != "ports" {
		t.Fatalf("web update fields: %v", f)
	}
	m = c.model()
	if len(m.Resources) != 2 || len(m.ServiceAccounts) != 0 {
		t.Fatal("deletes not applied")
	}
	if !verifyPassword(m.UserByEmail["bob@example.com"].PasswordHash, "new password") {
		t.Fatal("password update not applied")
	}
	// IDs survive updates.
	if p, _ := c.ApplyYAML(ctx, []byte(changed), false); !p.Empty() {
		t.Fatalf("re-apply not empty: %s", p)
	}
}

func TestApplyInvalidLeavesStoreUntouched(t *testing.T) {
	dir := t.TempDir()
	c := openController(t, dir)
	ctx := context.Background()
	if _, err := c.ApplyYAML(ctx, []byte(testYAML), false); err != nil {
		t.Fatal(err)
	}
	// A valid change appended to each bad file must not land either.
	withValid := func(s string) string { return strings.Replace(s, "tcp/8000-8100", "tcp/9000", 1) }
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top-level key", testYAML + "extra: 1\n", []string{"line 34", "extra"}},
		{"unknown resource key", strings.Replace(testYAML, "    network: corp\n    ports: [tcp/22", "    network: corp\n    prots: [tcp/1]\n    ports: [tcp/22", 1), []string{"line 20", "prots"}},
		{"unknown network", strings.Replace(testYAML, "network: lab\n", "network: labb\n", 1), []string{"line 29", `resources[2] (labnet)`, `"network"`, `unknown remote network "labb"`}},
		{"unknown group", strings.Replace(testYAML, "groups: [ops]", "groups: [opps]", 1), []string{"line 30", `"groups"`, `unknown group "opps"`}},
		{"bad CIDR", strings.Replace(testYAML, "198.51.100.0/24", "198.51.100.0/33", 1), []string{"line 28", `"address"`, "bad CIDR"}},
		{"CIDR host bits", strings.Replace(testYAML, "198.51.100.0/24", "198.51.100.7/24", 1), []string{"line 28", "host bits"}},
		{"bad port", strings.Replace(testYAML, "tcp/5432", "tcp/70000", 1), []string{"line 20", `"ports"`, "70000"}},
		{"bad protocol", strings.Replace(testYAML, "udp/53", "sctp/53", 1), []string{"line 20", "protocol"}},
		{"bad port range", strings.Replace(testYAML, "tcp/8000-8100", "tcp/8100-8000", 1), []string{"line 25", "range"}},
		{"duplicate resource", strings.Replace(testYAML, "name: web", "name: db", 1), []string{"line 22", `duplicate resource name "db"`}},
		{"duplicate group", strings.Replace(testYAML, "name: ops", "name: engineering", 1), []string{"line 9", "duplicate group"}},
		{"duplicate network", strings.Replace(testYAML, "name: lab\n", "name: corp\n", 1), []string{"line 4", "duplicate remote network"}},
		{"duplicate connector", strings.Replace(testYAML, "[lab-a]", "[corp-a]", 1), []string{"line 5", "duplicate connector"}},
		{"duplicate user", strings.Replace(testYAML, "email: bob@example.com", "email: alice@example.com", 1), []string{"line 14", "duplicate user"}},
		{"bad wildcard", strings.Replace(testYAML, `"*.corp.internal"`, `"a.*.corp.internal"`, 1), []string{"line 23", "address"}},
		{"duplicate key", strings.Replace(testYAML, "    network: corp\n    ports: [tcp/22", "    network: corp\n    network: corp\n    ports: [tcp/22", 1), []string{"line 20", "already"}},
		{"wrong type", strings.Replace(testYAML, "ports: [tcp/8000-8100]", "ports: tcp/8000", 1), []string{"line 25"}},
		{"bad email", strings.Replace(testYAML, "email: bob@example.com", "email: bob", 1), []string{"line 14", "email"}},
		{"not yaml", "remote_networks: [\n", []string{"line"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := storeDigest(t, dir)
			rev := c.model().Rev
			_, err := c.ApplyYAML(ctx, []byte(withValid(tc.yaml)), false)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("error %v does not wrap ErrInvalidSpec", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if got := storeDigest(t, dir); got != before {
				t.Fatal("store changed")
			}
			if c.model().Rev != rev {
				t.Fatal("revision moved")
			}
			if _, err := c.ApplyYAML(ctx, []byte(withValid(tc.yaml)), true); err == nil {
				t.Fatal("dry run accepted")
			}
		})
	}
}

func TestRestartKeepsKeysAndData(t *testing.T) {
	dir := t.TempDir()
	e := newTestController(t, dir, nil)
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	digest := randomDigest()
	e.heartbeat(con, digest, "192.0.2.10:4433")
	adminTok, caPEM, jwks := e.c.AdminToken(), string(e.c.CACertPEM()), string(e.c.JWKS())
	tlsCert, _ := os.ReadFile(filepath.Join(dir, "tls.pem"))
	for _, f := range []string{"ca-key.pem", "admin-token", "token-keys.json", "tls-key.pem", "turn-secret"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	e.stop()

	e2 := newTestController(t, dir, func(cfg *Config) { cfg.PublicURL = e.url })
	if e2.c.AdminToken() != adminTok || string(e2.c.CACertPEM()) != caPEM || string(e2.c.JWKS()) != jwks {
		t.Fatal("restart changed admin token, CA or signing keys")
	}
	tlsCert2, _ := os.ReadFile(filepath.Join(dir, "tls.pem"))
	if string(tlsCert) != string(tlsCert2) {
		t.Fatal("restart reissued the TLS certificate")
	}
	m := e2.c.model()
	if len(m.Resources) != 3 {
		t.Fatalf("resources after restart: %d", len(m.Resources))
	}
	cn := m.Connectors[con.id]
	if cn == nil || len(cn.CertSHA256) != 1 || cn.CertSHA256[0] != digest {
		t.Fatalf("connector state after restart: %+v", cn)
	}
	if p, _ := e2.c.ApplyYAML(context.Background(), []byte(testYAML), false); !p.Empty() {
		t.Fatalf("apply after restart not empty: %s", p)
	}
	// The enrolled connector's credential still works against the restarted controller.
	con.http = e2.client(&con.cert)
	e2.heartbeat(con, digest, "192.0.2.10:4433")
}
