package controller

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"postern.dev/postern/controller/adminapi"
)

// everyFieldYAML sets every field of the configuration that the console's
// forms do not edit: access requirements of all three kinds, a posture
// profile with every check, auto-lock, the client ranges and a user's bound
// subject.
const everyFieldYAML = accessAPIYAML + `client_ranges:
  ipv4: 100.80.0.0/16
  ipv6: fd00:5054::/48
service_accounts:
  - name: ci
    groups: [engineering]
`

// TestConsoleEditsKeepEveryField: the console reads the configuration
// through the admin API, edits one object with a form and saves it; every
// field it does not edit (access requirements, posture checks, auto-lock,
// client ranges, a bound identity-provider subject) comes back unchanged,
// and GET /api/v1/spec answers exactly the edited configuration.
func TestConsoleEditsKeepEveryField(t *testing.T) {
	e, _ := newAccessController(t)
	e.apply(everyFieldYAML)
	e.admin("PUT", "/api/v1/users/alice@example.com", adminapi.UserSpec{Email: "alice@example.com", OIDCSubject: "sub-alice", Disabled: true}, 200)
	e.admin("PUT", "/api/v1/posture-profiles/managed", adminapi.PostureProfileSpec{Name: "managed", OSMin: map[string]string{"linux": "6.1"},
		DiskEncryption: true, Firewall: true, ClientMin: "0.3.0"}, 200)
	e.admin("POST", PathAdmins, AdminRequest{Name: "olivia", Role: RoleOwner, Password: "owner password 1"}, 201)
	cl := e.consoleClient()
	csrf := e.consoleSignIn(cl, "olivia", "owner password 1")

	var want adminapi.Spec
	mustJSON(t, e.admin("GET", "/api/v1/spec", nil, 200), &want)
	if want.ClientRanges == nil || want.AutoLock == "" || len(want.PostureProfiles) != 1 {
		t.Fatalf("the configuration lacks fields this test keeps: %+v", want)
	}
	save := func(path, done string, form url.Values) {
		t.Helper()
		form.Set("csrf", csrf)
		if st, body := e.consolePost(cl, path, form); st != 200 || !strings.Contains(body, done) {
			t.Fatalf("POST %s: %d, no %q in %s", path, st, done, body)
		}
	}
	resource := func(name string) *adminapi.ResourceSpec {
		i := slices.IndexFunc(want.Resources, func(r adminapi.ResourceSpec) bool { return r.Name == name })
		if i < 0 {
			t.Fatalf("no resource %s", name)
		}
		return &want.Resources[i]
	}
	// Two resources with requirements get another port.
	for _, name := range []string{"prod-db", "mfa-db"} {
		r := resource(name)
		save("/console/resources/"+name, "Saved resource "+name+".", url.Values{"name": {name}, "address": {r.Address},
			"network": {r.Network}, "ports": {"tcp/5432, tcp/6432"}, "groups": r.Groups})
		r.Ports = []string{"tcp/5432", "tcp/6432"}
	}
	// alice (disabled, bound to a subject) joins sre-leads.
	save("/console/users", "Saved user alice@example.com.", url.Values{"original": {"alice@example.com"}, "email": {"alice@example.com"},
		"disabled": {"on"}, "groups": {"engineering", "sre-leads"}, "action": {"save"}})
	for i := range want.Groups {
		if want.Groups[i].Name == "sre-leads" {
			want.Groups[i].Users = append(want.Groups[i].Users, "alice@example.com")
		}
	}
	// The service account moves to sre-leads.
	save("/console/service-accounts", "Saved service account ci.", url.Values{"original": {"ci"}, "name": {"ci"}, "groups": {"sre-leads"}, "action": {"save"}})
	want.ServiceAccounts[0].Groups = []string{"sre-leads"}

	got := e.admin("GET", "/api/v1/spec", nil, 200)
	exp, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(exp)+"\n" {
		t.Fatalf("configuration after the console's edits:\n%s\nwant:\n%s", got, exp)
	}
}
