package connector

import (
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/wire"
)

// TestCheckAccessTable: the connector's judgement of requirements from the
// token's claims and the pushed state, the newer of the two winning.
func TestCheckAccessTable(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	res := func(req controlapi.Requirements) *compiledResource {
		return &compiledResource{id: "r1", name: "prod-db", require: req, grants: map[string]time.Time{}, lastUse: map[string]time.Time{}}
	}
	pol := func(a controlapi.ConnectorAccess) *compiledPolicy { return &compiledPolicy{access: compileAccess(a)} }
	claims := func(mut func(*ctoken.Claims)) *ctoken.Claims {
		c := &ctoken.Claims{Device: "dev1"}
		c.Subject = "usr1"
		if mut != nil {
			mut(c)
		}
		return c
	}
	hour := int64(3600)
	cases := []struct {
		name    string
		p       *compiledPolicy
		r       *compiledResource
		cl      *ctoken.Claims
		running bool
		want    wire.Status
		until   time.Time
	}{
		{"no requirement", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{}), claims(nil), false, wire.StatusOK, time.Time{}},
		{"mfa missing", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{MFASeconds: hour}), claims(nil), false, wire.StatusMFARequired, time.Time{}},
		{"mfa in token", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{MFASeconds: hour}), claims(func(c *ctoken.Claims) { c.MFAAt = now.Add(-30 * time.Minute).Unix() }), false, wire.StatusOK, time.Time{}},
		{"mfa in token too old", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{MFASeconds: hour}), claims(func(c *ctoken.Claims) { c.MFAAt = now.Add(-2 * time.Hour).Unix() }), false, wire.StatusMFARequired, time.Time{}},
		{"pushed mfa newer than token", pol(controlapi.ConnectorAccess{MFA: map[string]time.Time{"dev1": now.Add(-time.Minute)}}), res(controlapi.Requirements{MFASeconds: hour}),
			claims(func(c *ctoken.Claims) { c.MFAAt = now.Add(-2 * time.Hour).Unix() }), false, wire.StatusOK, time.Time{}},
		{"pushed mfa of another device", pol(controlapi.ConnectorAccess{MFA: map[string]time.Time{"dev2": now}}), res(controlapi.Requirements{MFASeconds: hour}), claims(nil), false, wire.StatusMFARequired, time.Time{}},
		{"mfa lapsed, running flow stays", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{MFASeconds: hour}), claims(nil), true, wire.StatusOK, time.Time{}},
		{"posture from token", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{Posture: []string{"managed"}}), claims(func(c *ctoken.Claims) { c.Posture = []string{"managed"} }), false, wire.StatusOK, time.Time{}},
		{"pushed posture overrides token", pol(controlapi.ConnectorAccess{DevicePosture: map[string][]string{"dev1": {}}}), res(controlapi.Requirements{Posture: []string{"managed"}}),
			claims(func(c *ctoken.Claims) { c.Posture = []string{"managed"} }), true, wire.StatusPosture, time.Time{}},
		{"all profiles needed", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{Posture: []string{"managed", "fw"}}), claims(func(c *ctoken.Claims) { c.Posture = []string{"managed"} }), false, wire.StatusPosture, time.Time{}},
		{"approval missing", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{Approval: true}), claims(nil), false, wire.StatusApprovalRequired, time.Time{}},
		{"grant in token", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{Approval: true}), claims(func(c *ctoken.Claims) { c.Grants = map[string]int64{"r1": now.Add(time.Hour).Unix()} }), false, wire.StatusOK, now.Add(time.Hour)},
		{"grant for another resource", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{Approval: true}), claims(func(c *ctoken.Claims) { c.Grants = map[string]int64{"r2": now.Add(time.Hour).Unix()} }), false, wire.StatusApprovalRequired, time.Time{}},
		{"grant ended closes running flow", pol(controlapi.ConnectorAccess{}), res(controlapi.Requirements{Approval: true}), claims(func(c *ctoken.Claims) { c.Grants = map[string]int64{"r1": now.Unix()} }), true, wire.StatusApprovalRequired, time.Time{}},
	}
	for _, tc := range cases {
		d := tc.p.checkAccess(tc.r, tc.cl, now, tc.running)
		if d.status != tc.want || !d.until.Equal(tc.until) {
			t.Errorf("%s: %v %q until %v; want %v until %v", tc.name, d.status, d.reason, d.until, tc.want, tc.until)
		}
	}
	// Pushed grant newer than the token's.
	r := res(controlapi.Requirements{Approval: true})
	r.grants["usr1"] = now.Add(2 * time.Hour)
	if d := pol(controlapi.ConnectorAccess{}).checkAccess(r, claims(func(c *ctoken.Claims) { c.Grants = map[string]int64{"r1": now.Add(time.Hour).Unix()} }), now, false); d.status != wire.StatusOK || !d.until.Equal(now.Add(2*time.Hour)) {
		t.Errorf("pushed grant: %+v", d)
	}
	// Auto-lock: past the window locked for new flows, not for running ones;
	// a grant unlocks; no last use known means not locked.
	lock := pol(controlapi.ConnectorAccess{AutoLockSeconds: 2 * hour})
	r = res(controlapi.Requirements{})
	r.lastUse["usr1"] = now.Add(-3 * time.Hour)
	if d := lock.checkAccess(r, claims(nil), now, false); d.status != wire.StatusApprovalRequired || d.reason != "locked: unused for 2h (postern request prod-db)" {
		t.Errorf("locked: %+v", d)
	}
	if d := lock.checkAccess(r, claims(nil), now, true); d.status != wire.StatusOK {
		t.Errorf("running flow on a locked resource: %+v", d)
	}
	r.grants["usr1"] = now.Add(time.Hour)
	if d := lock.checkAccess(r, claims(nil), now, false); d.status != wire.StatusOK {
		t.Errorf("locked with a grant: %+v", d)
	}
	if d := lock.checkAccess(res(controlapi.Requirements{}), claims(nil), now, false); d.status != wire.StatusOK {
		t.Errorf("no last use: %+v", d)
	}
}
