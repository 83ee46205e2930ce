package controller

import (
	"regexp"
	"slices"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/policy"
)

// Access governance in network.yaml (docs/access.md): resource requirements,
// posture profiles and auto-lock.

// Store kinds of access governance (posture profiles are an object of the
// configuration: package adminapi names their kind).
const (
	KindPostureProfile = adminapi.KindPostureProfile
	KindAccessSettings = "access_settings" // one object, named "access"
	KindMFA            = "mfa"             // per user, named by user id
	KindPosture        = "posture"         // per device, named by device id: its latest report
	KindAccessRequest  = "access_request"
	KindAccessUse      = "access_use" // per (principal, resource): last use, named "pid/rid"
)

// A resource's requirements and the posture profiles are the admin API's
// (package adminapi).
type (
	Require            = adminapi.Require
	PostureProfileSpec = adminapi.PostureProfileSpec
)

// PostureProfile is a stored posture profile.
type PostureProfile struct {
	ID string `json:"id"`
	PostureProfileSpec
}

// AccessSettings holds the deployment-wide access settings.
type AccessSettings struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	AutoLock string `json:"auto_lock,omitempty"`
	// Since is when auto-lock was turned on or changed: the start of the
	// window for access not used since.
	Since time.Time `json:"since"`
}

const accessSettingsName = "access"

var versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

// knownOS are the os_min keys.
var knownOS = []string{"linux", "windows", "darwin"}

// normalizeAccess validates the access parts of spec; add reports a problem.
func normalizeAccess(spec *Spec, groups map[string]bool, add func(section string, i int, name, field, format string, args ...any), addTop func(field, format string, args ...any)) {
	profiles := map[string]bool{}
	for i, p := range spec.PostureProfiles {
		if err := validObjectName(p.Name); err != nil {
			add("posture_profiles", i, p.Name, "name", "%v", err)
		} else if profiles[p.Name] {
			add("posture_profiles", i, p.Name, "name", "duplicate posture profile name %q", p.Name)
		}
		profiles[p.Name] = true
		for os, v := range p.OSMin {
			if !slices.Contains(knownOS, os) {
				add("posture_profiles", i, p.Name, "os_min", "unknown OS %q (use %s)", os, strings.Join(knownOS, ", "))
			}
			if !versionRE.MatchString(v) {
				add("posture_profiles", i, p.Name, "os_min", "%s: %q is not a version like 6.1 or 10.0.19045", os, v)
			}
		}
		if p.ClientMin != "" && !versionRE.MatchString(strings.TrimPrefix(p.ClientMin, "v")) {
			add("posture_profiles", i, p.Name, "client_min", "%q is not a version like 0.3.0", p.ClientMin)
		}
	}
	if spec.AutoLock != "" {
		if d, err := policy.ParseDuration(spec.AutoLock); err != nil {
			addTop("auto_lock", "%v", err)
		} else if d < time.Hour {
			addTop("auto_lock", "%q is shorter than an hour", spec.AutoLock)
		}
	}
	for i, r := range spec.Resources {
		q := r.Require
		if q == nil {
			continue
		}
		if q.MFA != "" {
			if _, err := policy.ParseDuration(q.MFA); err != nil {
				add("resources", i, r.Name, "require.mfa", "%v", err)
			}
		}
		seen := map[string]bool{}
		for _, p := range q.Posture {
			if !profiles[p] {
				add("resources", i, r.Name, "require.posture", "unknown posture profile %q (not under posture_profiles:)", p)
			} else if seen[p] {
				add("resources", i, r.Name, "require.posture", "profile %q listed twice", p)
			}
			seen[p] = true
		}
		if a := q.Approval; a != nil {
			if len(a.Approvers) == 0 {
				add("resources", i, r.Name, "require.approval.approvers", "at least one group is required")
			}
			for _, g := range a.Approvers {
				if !groups[g] {
					add("resources", i, r.Name, "require.approval.approvers", "unknown group %q (not under groups:)", g)
				}
			}
			if a.Max == "" {
				add("resources", i, r.Name, "require.approval.max", "is required (the longest grant, like 8h)")
			} else if _, err := policy.ParseDuration(a.Max); err != nil {
				add("resources", i, r.Name, "require.approval.max", "%v", err)
			}
		}
		if q.MFA == "" && len(q.Posture) == 0 && q.Approval == nil {
			spec.Resources[i].Require = nil
		}
	}
}

// requirements converts a stored Require to the wire form.
func requirements(q *Require) *controlapi.Requirements {
	if q == nil {
		return nil
	}
	out := &controlapi.Requirements{Posture: q.Posture, Approval: q.Approval != nil}
	if d, err := policy.ParseDuration(q.MFA); err == nil {
		out.MFASeconds = int64(d / time.Second)
	}
	if out.Empty() {
		return nil
	}
	return out
}

// maxGrant is the longest grant an approval may give (0: approval not required).
func maxGrant(q *Require) time.Duration {
	if q == nil || q.Approval == nil {
		return 0
	}
	d, _ := policy.ParseDuration(q.Approval.Max)
	return d
}

// mfaWindow is how recent a second factor must be (0: none required).
func mfaWindow(q *Require) time.Duration {
	if q == nil || q.MFA == "" {
		return 0
	}
	d, _ := policy.ParseDuration(q.MFA)
	return d
}

// autoLock is the configured auto-lock window (0: off).
func (s *AccessSettings) autoLock() time.Duration {
	if s == nil || s.AutoLock == "" {
		return 0
	}
	d, _ := policy.ParseDuration(s.AutoLock)
	return d
}

func fmtDur(d time.Duration) string { return policy.FormatDuration(d) }
