package controller

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"postern.dev/postern/controller/console"
	"postern.dev/postern/controller/oidcauth/oidctest"
	"postern.dev/postern/controller/store"
)

// TestConsoleSingleSignOn: in Chromium, an identity-provider user in the
// owners group signs in to the console with single sign-on and becomes an
// owner admin (the audit names the OIDC subject); a user in no admin group
// is refused; group changes at the provider change the role at the next
// sign-in.
func TestConsoleSingleSignOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	idp := oidctest.Start(t, oidctest.Options{
		Clients: []oidctest.Client{{ID: "postern", Secret: "postern-secret", Web: true, RedirectURIs: []string{url + console.OIDCCallbackPath}}},
		Accounts: map[string]oidctest.Account{
			"root":  {Password: "root-pw", Email: "Root@Example.com", Groups: []string{"staff", "postern-owners"}},
			"watch": {Password: "watch-pw", Email: "watch@example.com", Groups: []string{"postern-auditors"}},
			"eve":   {Password: "eve-pw", Email: "eve@example.com", Groups: []string{"staff"}},
		},
	})
	dir := t.TempDir()
	secret := filepath.Join(dir, "client-secret")
	os.WriteFile(secret, []byte("postern-secret\n"), 0o600)
	oc := &OIDCConfig{Issuer: idp.Issuer, ClientID: "postern", ClientSecretFile: secret, Scopes: []string{"groups"},
		AdminGroups: map[string]string{"postern-owners": RoleOwner, "postern-auditors": RoleAuditor}}
	e := newTestControllerOn(t, ln, filepath.Join(dir, "data"), func(c *Config) { c.OIDC = oc })
	e.apply(testYAML)
	b := newBrowser(t, e.url)

	sso := func(login, password string) {
		t.Helper()
		// A fresh browser: no session at the provider from the last sign-in.
		b.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, network.ClearBrowserCookies, cdp.Empty{})
			return err
		}))
		b.open("/console/login")
		b.do(chromedp.Click(chromedp.CSS("#sso")), chromedp.WaitVisible(chromedp.CSS(`input[name=login]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=login]`), login), chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
			chromedp.Click(chromedp.CSS(`#login button`)), chromedp.WaitVisible(chromedp.CSS("main h1")))
	}
	sso("root", "root-pw")
	if who := b.text("#whoami"); !strings.Contains(who, "root@example.com") || !strings.Contains(who, RoleOwner) {
		t.Fatalf("signed in as %q", who)
	}
	as, _ := e.c.ListAdmins(t.Context())
	if len(as) != 1 || as[0].Name != "root@example.com" || as[0].Role != RoleOwner || as[0].HasPassword {
		t.Fatalf("admins after SSO: %+v", as)
	}
	// An owner's change through the console is audited with the subject.
	b.open("/console/groups")
	b.do(chromedp.SendKeys(chromedp.CSS("#nname"), "sso-made"), chromedp.Click(chromedp.CSS("#nsave")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	entries, _ := e.c.store.AuditLog(t.Context(), 0, 1000)
	var made *store.AuditEntry
	for i := range entries {
		if entries[i].Kind == KindGroup && entries[i].Name == "sso-made" {
			made = &entries[i]
		}
	}
	if made == nil || made.Actor != "root@example.com" || !strings.Contains(made.ActorVia, "oidc "+idp.Issuer+" root") {
		t.Fatalf("group creation audited as %+v", made)
	}
	b.signOut()

	// Not in an admin group: refused, no admin made.
	sso("eve", "eve-pw")
	if msg := b.text("#error"); !strings.Contains(msg, "eve@example.com is in none of the identity provider groups") {
		t.Fatalf("eve: %q", msg)
	}
	if as, _ := e.c.ListAdmins(t.Context()); len(as) != 1 {
		t.Fatalf("admins after a refused SSO: %+v", as)
	}

	// The provider moves root to the auditors: an auditor at the next sign-in.
	idp.SetGroups(t, "root", []string{"postern-auditors"})
	sso("root", "root-pw")
	if who := b.text("#whoami"); !strings.Contains(who, RoleAuditor) {
		t.Fatalf("after the group change: %q", who)
	}
}

// TestAdminGroupsConfig: a group mapped to an unknown role stops the
// controller with a message naming it; the most powerful role of several
// groups wins.
func TestAdminGroupsConfig(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "s")
	os.WriteFile(secret, []byte("x\n"), 0o600)
	_, err := Open(Config{DataDir: dir, PublicURL: "https://127.0.0.1:1", OIDC: &OIDCConfig{Issuer: "http://127.0.0.1:1", ClientID: "c",
		ClientSecretFile: secret, AdminGroups: map[string]string{"it-admins": "root"}}})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), `group "it-admins": role "root" is not one of owner, admin, approver, auditor`) {
		t.Fatalf("bad admin group role: %v", err)
	}
	m := map[string]string{"a": RoleAuditor, "b": RoleAdmin, "c": RoleApprover}
	if r := adminRoleOf([]string{"x", "a", "c", "b"}, m); r != RoleAdmin {
		t.Fatalf("role of a, b, c: %q", r)
	}
	if r := adminRoleOf([]string{"x"}, m); r != "" {
		t.Fatalf("role of x: %q", r)
	}
}
