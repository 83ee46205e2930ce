// End-to-end tests of the admin API: create, read, update and delete of
// resources, groups and users, what the audit log records of it, and the
// per-IP rate limit in front of it.

package controller

import (
	"fmt"
	"strings"
	"testing"

	"postern.dev/postern/controller/adminapi"
)

func TestAdminCRUD(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	if st, _ := e.call(nil, "GET", "/api/v1/resources", "", nil); st != 401 {
		t.Fatalf("no token: %d", st)
	}
	// Create, read, update, delete a resource.
	var r Resource
	mustJSON(t, e.admin("POST", "/api/v1/resources", map[string]any{"name": "ssh", "address": "10.1.2.3", "network": "corp", "ports": []string{"tcp/22"}, "groups": []string{"ops"}}, 201), &r)
	if r.ID == "" || r.Address != "10.1.2.3" {
		t.Fatalf("created: %+v", r)
	}
	st, data := e.call(nil, "POST", "/api/v1/resources", e.c.AdminToken(), map[string]any{"name": "ssh2", "address": "10.1.2.3", "network": "nowhere", "ports": []string{"tcp/22"}})
	if st != 400 || !strings.Contains(string(data), `field \"network\"`) || !strings.Contains(string(data), "nowhere") {
		t.Fatalf("bad network: %d %s", st, data)
	}
	st, data = e.call(nil, "POST", "/api/v1/resources", e.c.AdminToken(), map[string]any{"name": "ssh3", "address": "10.1.2.3", "network": "corp", "ports": []string{"tcp/0"}})
	if st != 400 || !strings.Contains(string(data), `field \"ports\"`) {
		t.Fatalf("bad port: %d %s", st, data)
	}
	st, data = e.call(nil, "POST", "/api/v1/resources", e.c.AdminToken(), map[string]any{"name": "ssh", "address": "10.1.2.4", "network": "corp"})
	if st != 409 {
		t.Fatalf("duplicate: %d %s", st, data)
	}
	st, data = e.call(nil, "POST", "/api/v1/resources", e.c.AdminToken(), map[string]any{"name": "x", "adress": "10.1.2.4"})
	if st != 400 || !strings.Contains(string(data), "adress") {
		t.Fatalf("unknown field: %d %s", st, data)
	}
	var got Resource
	mustJSON(t, e.admin("GET", "/api/v1/resources/"+r.ID, nil, 200), &got)
	if got.Name != "ssh" {
		t.Fatalf("get: %+v", got)
	}
	mustJSON(t, e.admin("PUT", "/api/v1/resources/"+r.ID, map[string]any{"name": "ssh", "address": "10.1.2.0/24", "network": "corp", "ports": []string{"tcp/22", "icmp"}, "groups": []string{"ops"}}, 200), &got)
	if got.ID != r.ID || got.Address != "10.1.2.0/24" || len(got.Ports) != 2 {
		t.Fatalf("update: %+v", got)
	}
	// Deleting a group still in use is refused, naming the user of it.
	st, data = e.call(nil, "DELETE", "/api/v1/groups/ops", e.c.AdminToken(), nil)
	if st != 400 || !strings.Contains(string(data), "ops") {
		t.Fatalf("delete used group: %d %s", st, data)
	}
	e.admin("DELETE", "/api/v1/resources/ssh", nil, 204)
	e.admin("GET", "/api/v1/resources/ssh", nil, 404)
	// Users: password is hashed, never shown.
	var u adminapi.UserView
	mustJSON(t, e.admin("POST", "/api/v1/users", map[string]any{"email": "carol@example.com", "password": "pw for carol"}, 201), &u)
	if !u.HasPassword || strings.Contains(string(e.admin("GET", "/api/v1/users/"+u.ID, nil, 200)), "argon2") {
		t.Fatalf("user view: %+v", u)
	}
	e.admin("PUT", "/api/v1/groups/engineering", map[string]any{"name": "engineering", "users": []string{"alice@example.com", "carol@example.com"}}, 200)
	e.login("carol@example.com", "pw for carol")
	// Connectors through the API.
	e.admin("POST", "/api/v1/connectors", map[string]any{"name": "corp-c", "network": "corp"}, 201)
	if _, err := e.c.EnrollmentToken(KindConnector, "corp-c", 0); err != nil {
		t.Fatal(err)
	}
	// Pagination.
	for i := 0; i < 5; i++ {
		e.admin("POST", "/api/v1/groups", map[string]any{"name": fmt.Sprintf("g%d", i)}, 201)
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		var page ListResponse
		mustJSON(t, e.admin("GET", "/api/v1/groups?limit=3&cursor="+cursor, nil, 200), &page)
		for _, it := range page.Items {
			seen[it.(map[string]any)["name"].(string)] = true
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 7 {
		t.Fatalf("paged groups: %v", seen)
	}
	if st, _ := e.call(nil, "GET", "/api/v1/groups?limit=0", e.c.AdminToken(), nil); st != 400 {
		t.Fatalf("limit=0: %d", st)
	}
	// Audit: who, what, when, before/after.
	var audit struct {
		Items []map[string]any `json:"items"`
	}
	mustJSON(t, e.admin("GET", "/api/v1/audit?limit=1000", nil, 200), &audit)
	var upd map[string]any
	for _, a := range audit.Items {
		if a["action"] == "update" && a["kind"] == "resource" && a["name"] == "ssh" {
			upd = a
		}
	}
	if upd == nil || upd["actor"] != "admin" || upd["before"] == nil || upd["after"] == nil || upd["at"] == nil {
		t.Fatalf("audit entry: %+v", upd)
	}
	if strings.Contains(fmt.Sprint(audit.Items), "argon2id") {
		t.Fatal("audit log leaks password hashes")
	}
	// The whole spec can be exported.
	var spec Spec
	mustJSON(t, e.admin("GET", "/api/v1/spec", nil, 200), &spec)
	if len(spec.RemoteNetworks) != 2 || len(spec.Groups) != 7 {
		t.Fatalf("spec: %+v", spec)
	}
	// Body limit.
	big := strings.Repeat("x", 2<<20)
	if st, _ := e.call(nil, "POST", "/api/v1/groups", e.c.AdminToken(), `{"name":"`+big+`"}`); st != 413 && st != 400 {
		t.Fatalf("oversized body: %d", st)
	}
	if st, _ := e.call(nil, "GET", "/healthz", "", nil); st != 200 {
		t.Fatal("healthz")
	}
	// The web console is served with a strict CSP.
	resp, err := e.client(nil).Get(e.url + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self';") {
		t.Fatalf("console: %d %v", resp.StatusCode, resp.Header)
	}
	if st, _ := e.call(nil, "GET", "/console/static/htmx.min.js", "", nil); st != 200 {
		t.Fatalf("console script: %d", st)
	}
}

func TestRateLimitPerIP(t *testing.T) {
	e := newTestController(t, t.TempDir(), func(c *Config) { c.RateLimit = 1; c.RateBurst = 5 })
	limited := false
	for i := 0; i < 20; i++ {
		if st, _ := e.call(nil, "GET", "/healthz", "", nil); st == 429 {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("no 429 after a burst")
	}
}
