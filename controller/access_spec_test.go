package controller

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

const accessSpecYAML = `remote_networks:
  - name: corp
    connectors: [corp-a]
groups:
  - name: engineering
    users: [alice@example.com]
  - name: sre-leads
    users: []
users:
  - email: alice@example.com
posture_profiles:
  - name: managed
    os_min: {linux: "6.1", windows: "10.0.19045", darwin: "14.0"}
    disk_encryption: true
    firewall: true
    client_min: "0.3.0"
resources:
  - name: prod-db
    address: db.corp.internal
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
    require:
      mfa: 12h
      posture: [managed]
      approval:
        approvers: [sre-leads]
        max: 8h
auto_lock: 30d
`

func TestApplyAccessSpecRoundTrip(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	p := e.apply(accessSpecYAML)
	kinds := map[string]bool{}
	for _, ch := range p.Changes {
		kinds[ch.Kind] = true
	}
	if !kinds[KindPostureProfile] || !kinds[KindAccessSettings] {
		t.Fatalf("plan lacks profile or settings: %s", p)
	}
	if p2 := e.apply(accessSpecYAML); !p2.Empty() {
		t.Fatalf("second apply not empty:\n%s", p2)
	}
	m := e.c.model()
	r := m.Resources[0]
	if mfaWindow(r.Require) != 12*time.Hour || maxGrant(r.Require) != 8*time.Hour || m.autoLock() != 30*24*time.Hour {
		t.Fatalf("stored requirements: %+v", r.Require)
	}
	// The spec endpoint gives it back; a changed field is an update.
	var spec Spec
	mustJSON(t, e.admin(http.MethodGet, "/api/v1/spec", nil, 200), &spec)
	if len(spec.PostureProfiles) != 1 || spec.AutoLock != "30d" || spec.Resources[0].Require.Approval.Max != "8h" {
		t.Fatalf("spec: %+v", spec)
	}
	p3 := e.apply(strings.Replace(accessSpecYAML, "mfa: 12h", "mfa: 4h", 1))
	if len(p3.Changes) != 1 || p3.Changes[0].Fields[0] != "require" {
		t.Fatalf("changing mfa: %s", p3)
	}
	// Removing auto_lock deletes the setting.
	p4 := e.apply(strings.Replace(accessSpecYAML, "auto_lock: 30d\n", "", 1))
	if m := e.c.model(); m.autoLock() != 0 || len(p4.Changes) != 2 {
		t.Fatalf("removing auto_lock: %s", p4)
	}
}

func TestApplyAccessSpecErrors(t *testing.T) {
	c := openController(t, t.TempDir())
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"bad mfa", strings.Replace(accessSpecYAML, "mfa: 12h", "mfa: soon", 1), []string{"line 24:", `resources[0] (prod-db)`, `"require.mfa"`, "soon"}},
		{"unknown profile", strings.Replace(accessSpecYAML, "posture: [managed]", "posture: [managd]", 1), []string{"line 25:", `"require.posture"`, `unknown posture profile "managd"`}},
		{"unknown approver group", strings.Replace(accessSpecYAML, "approvers: [sre-leads]", "approvers: [sre]", 1), []string{"line 27:", `"require.approval.approvers"`, `unknown group "sre"`}},
		{"no max", strings.Replace(accessSpecYAML, "        max: 8h\n", "", 1), []string{"line 26:", `"require.approval.max"`, "is required"}},
		{"bad max", strings.Replace(accessSpecYAML, "max: 8h", "max: 0h", 1), []string{"line 28:", `"require.approval.max"`, "positive"}},
		{"bad auto_lock", strings.Replace(accessSpecYAML, "auto_lock: 30d", "auto_lock: 30days", 1), []string{"line 29:", "auto_lock", "30days"}},
		{"short auto_lock", strings.Replace(accessSpecYAML, "auto_lock: 30d", "auto_lock: 5m", 1), []string{"line 29:", "shorter than an hour"}},
		{"unknown OS", strings.Replace(accessSpecYAML, "darwin: \"14.0\"", "beos: \"5\"", 1), []string{"line 13:", `posture_profiles[0] (managed)`, `"os_min"`, `unknown OS "beos"`}},
		{"bad version", strings.Replace(accessSpecYAML, `linux: "6.1"`, `linux: "six"`, 1), []string{"line 13:", `"six" is not a version`}},
		{"bad client_min", strings.Replace(accessSpecYAML, `client_min: "0.3.0"`, `client_min: "latest"`, 1), []string{"line 16:", `"client_min"`}},
		{"unknown require key", strings.Replace(accessSpecYAML, "mfa: 12h", "mfa: 12h\n      sms: true", 1), []string{"line 25:", "sms"}},
		{"duplicate profile", strings.Replace(accessSpecYAML, "resources:\n", "  - name: managed\nresources:\n", 1), []string{"line 17:", "duplicate posture profile"}},
	}
	for _, tc := range cases {
		_, err := c.ApplyYAML(context.Background(), []byte(tc.yaml), false)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
	if len(c.model().Resources) != 0 {
		t.Fatal("a refused file changed the store")
	}
}

func TestResourceRequireThroughREST(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(accessSpecYAML)
	body := map[string]any{"name": "web", "address": "web.corp.internal", "network": "corp", "ports": []string{"tcp/443"}, "groups": []string{"engineering"},
		"require": map[string]any{"mfa": "1h", "posture": []string{"nope"}}}
	data := e.admin(http.MethodPost, "/api/v1/resources", body, http.StatusBadRequest)
	if !strings.Contains(string(data), `unknown posture profile \"nope\"`) {
		t.Fatalf("bad require: %s", data)
	}
	body["require"] = map[string]any{"mfa": "1h", "posture": []string{"managed"}}
	e.admin(http.MethodPost, "/api/v1/resources", body, http.StatusCreated)
	var got struct {
		Require *Require `json:"require"`
	}
	if err := json.Unmarshal(e.admin(http.MethodGet, "/api/v1/resources/web", nil, 200), &got); err != nil || got.Require == nil || got.Require.MFA != "1h" {
		t.Fatalf("stored: %v %+v", err, got.Require)
	}
	// Posture profiles through REST: create, rename (references follow),
	// and a profile still required cannot be deleted.
	e.admin(http.MethodPost, "/api/v1/posture-profiles", map[string]any{"name": "strict", "disk_encryption": true, "os_min": map[string]string{"linux": "6.8"}}, http.StatusCreated)
	e.admin(http.MethodPost, "/api/v1/posture-profiles", map[string]any{"name": "bad", "os_min": map[string]string{"plan9": "4"}}, http.StatusBadRequest)
	e.admin(http.MethodPut, "/api/v1/posture-profiles/managed", map[string]any{"name": "corporate", "firewall": true}, http.StatusOK)
	for _, r := range e.c.model().Resources {
		if r.Name == "web" && r.Require.Posture[0] != "corporate" {
			t.Fatalf("posture after profile rename: %v", r.Require.Posture)
		}
	}
	if data := e.admin(http.MethodDelete, "/api/v1/posture-profiles/corporate", nil, http.StatusBadRequest); !strings.Contains(string(data), `unknown posture profile \"corporate\"`) {
		t.Fatalf("deleting a required profile: %s", data)
	}
	e.admin(http.MethodDelete, "/api/v1/posture-profiles/strict", nil, http.StatusNoContent)
	// Renaming an approver group follows into require.approval.
	e.admin(http.MethodPut, "/api/v1/groups/sre-leads", map[string]any{"name": "sre", "users": []string{}}, http.StatusOK)
	for _, r := range e.c.model().Resources {
		if r.Name == "prod-db" && r.Require.Approval.Approvers[0] != "sre" {
			t.Fatalf("approvers after group rename: %v", r.Require.Approval.Approvers)
		}
	}
}
