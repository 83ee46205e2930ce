package controller

import (
	"encoding/json"
	"html/template"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/controller/store/pgtest"
)

// adminToken makes an admin (without password) and a token of its role.
func (e *testEnv) adminToken(name, role string) string {
	e.t.Helper()
	e.admin("POST", PathAdmins, AdminRequest{Name: name, Role: role}, 201)
	var tv AdminTokenView
	json.Unmarshal(e.admin("POST", PathAdminTokens, AdminTokenRequest{Admin: name, Name: "test"}, 201), &tv)
	if !strings.HasPrefix(tv.Token, adminTokenPrefix) || tv.Role != role {
		e.t.Fatalf("token: %+v", tv)
	}
	return tv.Token
}

// TestAdminRolesEnforced checks every role against routes of each kind, on
// both store backends.
func TestAdminRolesEnforced(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var mod func(*Config)
			if backend == "postgres" {
				dbURL := pgtest.Start(t).NewDatabase(t)
				mod = func(c *Config) { c.DatabaseURL = dbURL }
			}
			e := newTestController(t, t.TempDir(), mod)
			e.apply(testYAML)
			tok := map[string]string{}
			for _, role := range Roles {
				tok[role] = e.adminToken(role+"@example.com", role)
			}
			res := adminapi.ResourceSpec{Name: "new-web", Address: "192.0.2.80", Network: "lab", Ports: []string{"tcp/80"}, Groups: []string{"engineering"}}
			cases := []struct {
				method, path string
				body         any
				want         map[string]int
			}{
				{"GET", "/api/v1/resources", nil, map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 403, RoleAuditor: 200}},
				{"GET", "/api/v1/audit", nil, map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 403, RoleAuditor: 200}},
				{"GET", "/api/v1/events", nil, map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 403, RoleAuditor: 200}},
				{"GET", "/metrics", nil, map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 403, RoleAuditor: 200}},
				{"GET", "/api/v1/access-requests", nil, map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 200, RoleAuditor: 200}},
				// 404: allowed through, and no such request.
				{"POST", "/api/v1/access-requests/req_none/approve", map[string]string{}, map[string]int{RoleOwner: 404, RoleAdmin: 404, RoleApprover: 404, RoleAuditor: 403}},
				{"POST", "/api/v1/connector-tokens", MintRequest{Name: "nope"}, map[string]int{RoleOwner: 404, RoleAdmin: 404, RoleApprover: 403, RoleAuditor: 403}},
				{"DELETE", "/api/v1/resources/none", nil, map[string]int{RoleOwner: 404, RoleAdmin: 404, RoleApprover: 403, RoleAuditor: 403}},
				{"POST", "/api/v1/apply?dry_run=1", "{}", map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 403, RoleAuditor: 403}},
				{"GET", PathAdmins, nil, map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 403, RoleAuditor: 200}},
				{"POST", PathAdmins, AdminRequest{Name: "x", Role: "bogus"}, map[string]int{RoleOwner: 400, RoleAdmin: 403, RoleApprover: 403, RoleAuditor: 403}},
				{"DELETE", PathAdminTokens + "/atk_none", nil, map[string]int{RoleOwner: 404, RoleAdmin: 403, RoleApprover: 403, RoleAuditor: 403}},
				{"GET", PathAdminMe, nil, map[string]int{RoleOwner: 200, RoleAdmin: 200, RoleApprover: 200, RoleAuditor: 200}},
			}
			for _, tc := range cases {
				for _, role := range Roles {
					if st, body := e.call(nil, tc.method, tc.path, tok[role], tc.body); st != tc.want[role] {
						t.Errorf("%s %s as %s: %d, want %d: %s", tc.method, tc.path, role, st, tc.want[role], body)
					}
				}
			}
			// A mutation: refused to the auditor, done by the admin.
			if st, _ := e.call(nil, "POST", "/api/v1/resources", tok[RoleAuditor], res); st != 403 {
				t.Fatalf("auditor created a resource: %d", st)
			}
			if st, body := e.call(nil, "POST", "/api/v1/resources", tok[RoleAdmin], res); st != 201 {
				t.Fatalf("admin create resource: %d %s", st, body)
			}
			// No credentials, or a made-up token: 401.
			for _, bad := range []string{"", adminTokenPrefix + strings.Repeat("0", 64), "pat_nope"} {
				if st, _ := e.call(nil, "GET", "/api/v1/resources", bad, nil); st != 401 {
					t.Errorf("token %q: %d, want 401", bad, st)
				}
			}
		})
	}
}

// TestAdminTokenLifecycle: a token cannot exceed its admin's role, expires,
// records its last use, follows a demotion and stops at revocation or
// when its admin is removed.
func TestAdminTokenLifecycle(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := newTestController(t, t.TempDir(), func(c *Config) { c.Now = clk.Now })
	e.apply(testYAML)
	e.admin("POST", PathAdmins, AdminRequest{Name: "bob", Role: RoleAdmin}, 201)
	// An admin cannot hold an owner token.
	if st, body := e.call(nil, "POST", PathAdminTokens, e.c.AdminToken(), AdminTokenRequest{Admin: "bob", Role: RoleOwner}); st != 400 || !strings.Contains(string(body), "cannot hold a owner token") {
		t.Fatalf("owner token for an admin: %d %s", st, body)
	}
	var tv AdminTokenView
	json.Unmarshal(e.admin("POST", PathAdminTokens, AdminTokenRequest{Admin: "bob", TTLSeconds: 3600, Name: "ci"}, 201), &tv)
	if st, _ := e.call(nil, "GET", "/api/v1/resources", tv.Token, nil); st != 200 {
		t.Fatalf("fresh token: %d", st)
	}
	var list struct{ Items []AdminTokenView }
	json.Unmarshal(e.admin("GET", PathAdminTokens, nil, 200), &list)
	if len(list.Items) != 1 || !list.Items[0].LastUsed.Equal(clk.Now()) || list.Items[0].Token != "" || list.Items[0].Admin != "bob" {
		t.Fatalf("token list: %+v", list.Items)
	}
	// Demoted to auditor: the admin-role token can only read now.
	e.admin("PUT", PathAdmins+"/bob", AdminRequest{Role: RoleAuditor}, 200)
	if st, _ := e.call(nil, "DELETE", "/api/v1/resources/web", tv.Token, nil); st != 403 {
		t.Fatalf("token of a demoted admin deleted: %d", st)
	}
	if st, _ := e.call(nil, "GET", "/api/v1/resources", tv.Token, nil); st != 200 {
		t.Fatalf("demoted admin cannot read: %d", st)
	}
	// Expiry.
	clk.Add(time.Hour)
	if st, body := e.call(nil, "GET", "/api/v1/resources", tv.Token, nil); st != 401 || !strings.Contains(string(body), "expired") {
		t.Fatalf("expired token: %d %s", st, body)
	}
	// Revocation.
	var tv2 AdminTokenView
	json.Unmarshal(e.admin("POST", PathAdminTokens, AdminTokenRequest{Admin: "bob"}, 201), &tv2)
	if st, _ := e.call(nil, "GET", "/api/v1/resources", tv2.Token, nil); st != 200 {
		t.Fatalf("token: %d", st)
	}
	e.admin("DELETE", PathAdminTokens+"/"+tv2.ID, nil, 204)
	if st, _ := e.call(nil, "GET", "/api/v1/resources", tv2.Token, nil); st != 401 {
		t.Fatalf("revoked token: %d", st)
	}
	// Removing the admin removes its tokens.
	var tv3 AdminTokenView
	json.Unmarshal(e.admin("POST", PathAdminTokens, AdminTokenRequest{Admin: "bob"}, 201), &tv3)
	e.admin("DELETE", PathAdmins+"/bob", nil, 204)
	if st, _ := e.call(nil, "GET", "/api/v1/resources", tv3.Token, nil); st != 401 {
		t.Fatalf("token of a removed admin: %d", st)
	}
	json.Unmarshal(e.admin("GET", PathAdminTokens, nil, 200), &list)
	if len(list.Items) != 0 {
		t.Fatalf("tokens left after removing the admin: %+v", list.Items)
	}
	// Bad input changes nothing.
	for _, bad := range []AdminRequest{{Name: "", Role: RoleAdmin}, {Name: "a b", Role: RoleAdmin}, {Name: "c", Role: "root"}, {Name: "d", Role: RoleAdmin, Password: "short"}} {
		if st, _ := e.call(nil, "POST", PathAdmins, e.c.AdminToken(), bad); st != 400 {
			t.Errorf("bad admin %+v: %d", bad, st)
		}
	}
	e.admin("POST", PathAdmins, AdminRequest{Name: "carol", Role: RoleAdmin}, 201)
	e.admin("POST", PathAdmins, AdminRequest{Name: "carol", Role: RoleAdmin}, 409)
	var as struct{ Items []AdminView }
	json.Unmarshal(e.admin("GET", PathAdmins, nil, 200), &as)
	if len(as.Items) != 1 || as.Items[0].Name != "carol" {
		t.Fatalf("admins: %+v", as.Items)
	}
}

// TestAuditNamesRealActor: the audit entry of a change made with an admin
// token names the admin, the token, the IP and the user agent; the
// bootstrap token is recorded as such.
func TestAuditNamesRealActor(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	tok := e.adminToken("dana@example.com", RoleAdmin)
	var tv struct{ Items []AdminTokenView }
	json.Unmarshal(e.admin("GET", PathAdminTokens, nil, 200), &tv)
	req, _ := http.NewRequest("DELETE", e.url+"/api/v1/resources/web", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", "postern-test/1.0")
	resp, err := e.client(nil).Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("delete: %v %v", err, resp)
	}
	resp.Body.Close()
	entries, err := e.c.store.AuditLog(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var del, created *store.AuditEntry
	for i := range entries {
		if entries[i].Action == "delete" && entries[i].Kind == KindResource {
			del = &entries[i]
		}
		if entries[i].Kind == KindAdminToken && entries[i].Action == "create" {
			created = &entries[i]
		}
	}
	if del == nil || del.Actor != "dana@example.com" || del.ActorVia != "token "+tv.Items[0].ID || del.UserAgent != "postern-test/1.0" || del.IP != "127.0.0.1" {
		t.Fatalf("delete audited as %+v", del)
	}
	if created == nil || created.Actor != "admin" || created.ActorVia != "bootstrap admin-token" {
		t.Fatalf("token creation audited as %+v", created)
	}
}

// consoleClient is a browser-like client with a cookie jar.
func (e *testEnv) consoleClient() *http.Client {
	cl := e.client(nil)
	jar, _ := cookiejar.New(nil)
	cl.Jar = jar
	return cl
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// consoleGet fetches a page and returns its status, body and CSRF token.
func (e *testEnv) consoleGet(cl *http.Client, path string) (int, string, string) {
	e.t.Helper()
	resp, err := cl.Get(e.url + path)
	if err != nil {
		e.t.Fatal(err)
	}
	body := e.readBody(resp)
	csrf := ""
	if m := csrfRE.FindStringSubmatch(body); m != nil {
		csrf = m[1]
	}
	return resp.StatusCode, body, csrf
}

func (e *testEnv) consolePost(cl *http.Client, path string, form url.Values) (int, string) {
	e.t.Helper()
	resp, err := cl.PostForm(e.url+path, form)
	if err != nil {
		e.t.Fatal(err)
	}
	body := e.readBody(resp)
	return resp.StatusCode, body
}

// readBody reads and closes a response's body.
func (e *testEnv) readBody(resp *http.Response) string {
	e.t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read %s %s: %v", resp.Request.Method, resp.Request.URL, err)
	}
	return string(b)
}

// consoleSignIn signs cl in and returns the session's CSRF token.
func (e *testEnv) consoleSignIn(cl *http.Client, name, password string) string {
	e.t.Helper()
	_, _, pre := e.consoleGet(cl, "/console/login")
	st, body := e.consolePost(cl, "/console/login", url.Values{"csrf": {pre}, "name": {name}, "password": {password}})
	if st != 200 || !strings.Contains(body, `id="whoami"`) {
		e.t.Fatalf("sign in as %s: %d %s", name, st, body)
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		e.t.Fatal("no CSRF token on the overview")
	}
	return m[1]
}

// TestConsoleSessions: password sign-in, CSRF refusal, a wrong password,
// idle expiry and revocation through the API.
func TestConsoleSessions(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := newTestController(t, t.TempDir(), func(c *Config) { c.Now = clk.Now })
	e.apply(testYAML)
	e.admin("POST", PathAdmins, AdminRequest{Name: "erin", Role: RoleAdmin, Password: "a long password 1"}, 201)

	cl := e.consoleClient()
	_, _, pre := e.consoleGet(cl, "/console/login")
	if st, body := e.consolePost(cl, "/console/login", url.Values{"csrf": {pre}, "name": {"erin"}, "password": {"wrong password!!"}}); st != 401 || !strings.Contains(body, "Wrong name or password") {
		t.Fatalf("wrong password: %d", st)
	}
	csrf := e.consoleSignIn(cl, "erin", "a long password 1")
	form := url.Values{"name": {"grp-x"}, "members": {"alice@example.com"}}
	// Without the CSRF token the form is refused and nothing changes.
	if st, _ := e.consolePost(cl, "/console/groups", form); st != 403 {
		t.Fatalf("form without CSRF: %d", st)
	}
	if _, err := e.c.lookup(t.Context(), KindGroup, "grp-x"); err == nil {
		t.Fatal("group created without a CSRF token")
	}
	form.Set("csrf", csrf)
	if st, body := e.consolePost(cl, "/console/groups", form); st != 200 || !strings.Contains(body, "Saved group grp-x") {
		t.Fatalf("group form: %d %s", st, body)
	}
	// The session is listed; revoking it signs the browser out.
	var ss struct{ Items []AdminSessionView }
	json.Unmarshal(e.admin("GET", PathAdminSessions, nil, 200), &ss)
	if len(ss.Items) != 1 || ss.Items[0].Admin != "erin" || ss.Items[0].Method != "password" {
		t.Fatalf("sessions: %+v", ss.Items)
	}
	e.admin("DELETE", PathAdminSessions+"/"+ss.Items[0].ID, nil, 204)
	if _, body, _ := e.consoleGet(cl, "/console/"); !strings.Contains(body, `id="signin"`) {
		t.Fatal("revoked session still signed in")
	}
	// Idle expiry.
	e.consoleSignIn(cl, "erin", "a long password 1")
	clk.Add(adminSessionIdle + time.Second)
	if _, body, _ := e.consoleGet(cl, "/console/"); !strings.Contains(body, `id="signin"`) {
		t.Fatal("idle session still signed in")
	}
}

// TestConsoleNetworkForms: create, rename and delete a remote network
// through the console's forms; a bad name is refused with the API's own
// message and changes nothing.
func TestConsoleNetworkForms(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	e.admin("POST", PathAdmins, AdminRequest{Name: "nina", Role: RoleAdmin, Password: "a long password 2"}, 201)
	cl := e.consoleClient()
	csrf := e.consoleSignIn(cl, "nina", "a long password 2")
	spec := func() *Spec {
		var s Spec
		mustJSON(t, e.admin("GET", "/api/v1/spec", nil, 200), &s)
		return &s
	}
	network := func(name string) *adminapi.NetworkSpec {
		for _, n := range spec().RemoteNetworks {
			if n.Name == name {
				return &n
			}
		}
		return nil
	}
	if st, body := e.consolePost(cl, "/console/networks", url.Values{"csrf": {csrf}, "name": {"edge"}, "members": {"edge-1\nedge-2"}}); st != 200 || !strings.Contains(body, "Saved remote network edge.") {
		t.Fatalf("create: %d %s", st, body)
	}
	if n := network("edge"); n == nil || strings.Join(n.Connectors, ",") != "edge-1,edge-2" {
		t.Fatalf("edge: %+v", n)
	}
	if st, _ := e.consolePost(cl, "/console/networks", url.Values{"csrf": {csrf}, "original": {"edge"}, "name": {"edge2"}, "members": {"edge-1"}}); st != 200 || network("edge") != nil || network("edge2") == nil {
		t.Fatalf("rename: %d", st)
	}
	before := spec()
	st, body := e.consolePost(cl, "/console/networks", url.Values{"csrf": {csrf}, "name": {"Bad Name!"}, "members": {""}})
	_, apiBody := e.call(nil, "POST", "/api/v1/networks", e.c.AdminToken(), adminapi.NetworkSpec{Name: "Bad Name!", Connectors: []string{}})
	var apiErr struct{ Error string }
	json.Unmarshal(apiBody, &apiErr)
	if st != 422 || apiErr.Error == "" || !strings.Contains(body, template.HTMLEscapeString(apiErr.Error)) {
		t.Fatalf("bad name: %d, API says %q: %s", st, apiErr.Error, body)
	}
	if len(spec().RemoteNetworks) != len(before.RemoteNetworks) {
		t.Fatal("a refused form changed the networks")
	}
	if st, _ := e.consolePost(cl, "/console/networks/edge2/delete", url.Values{"csrf": {csrf}}); st != 200 || network("edge2") != nil {
		t.Fatalf("delete: %d", st)
	}
}
