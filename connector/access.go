package connector

import (
	"fmt"
	"slices"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/policy"
	"postern.dev/postern/wire"
)

// Access governance (docs/access.md). A resource may require a recent second
// factor, device posture profiles and an approved request; auto-lock shuts a
// principal out of a resource it has not used for a while. The connector
// judges each from the Connection Token's signed claims and the access state
// the controller pushes, taking the newer of the two, so a step-up or an
// approval works within a second and a device that falls out of a posture
// profile loses the resource as soon as the push arrives.
//
// Running flows: a grant's end closes them (a timer fires at the end), and
// so does losing a posture profile (on the policy push). The MFA window and
// auto-lock govern new flows only: a flow opened with a valid second factor
// runs until it ends.

// compiledAccess is the connector-wide access state of one policy snapshot.
type compiledAccess struct {
	autoLock time.Duration
	mfa      map[string]time.Time
	posture  map[string][]string
}

func compileAccess(a controlapi.ConnectorAccess) compiledAccess {
	return compiledAccess{autoLock: time.Duration(a.AutoLockSeconds) * time.Second, mfa: a.MFA, posture: a.DevicePosture}
}

// accessDecision is the verdict of checkAccess: ok, or a refusal status
// and message; until is when an ok verdict stops holding (zero: never, for
// running flows).
type accessDecision struct {
	status wire.Status
	reason string
	until  time.Time
}

// checkAccess judges res's requirements for the token's principal and
// device at now. running is true when re-checking an established flow:
// then only grants and posture count (see the package comment above).
func (p *compiledPolicy) checkAccess(res *compiledResource, cl *ctoken.Claims, now time.Time, running bool) accessDecision {
	req := res.require
	var d accessDecision
	if len(req.Posture) > 0 {
		have := cl.Posture
		if v, ok := p.access.posture[cl.Device]; ok {
			have = v
		}
		for _, prof := range req.Posture {
			if !slices.Contains(have, prof) {
				return accessDecision{status: wire.StatusPosture, reason: fmt.Sprintf("posture: device does not satisfy profile %q", prof)}
			}
		}
	}
	if req.MFASeconds > 0 && !running {
		at := time.Unix(cl.MFAAt, 0)
		if cl.MFAAt == 0 {
			at = time.Time{}
		}
		if pushed := p.access.mfa[cl.Device]; pushed.After(at) {
			at = pushed
		}
		window := time.Duration(req.MFASeconds) * time.Second
		if at.IsZero() || now.Sub(at) > window {
			return accessDecision{status: wire.StatusMFARequired, reason: fmt.Sprintf("mfa required: a second factor within %s (postern mfa)", policy.FormatDuration(window))}
		}
	}
	grantEnd := time.Time{}
	if end, ok := cl.Grants[res.id]; ok {
		grantEnd = time.Unix(end, 0)
	}
	if pushed := res.grants[cl.Subject]; pushed.After(grantEnd) {
		grantEnd = pushed
	}
	granted := now.Before(grantEnd)
	if req.Approval {
		if !granted {
			return accessDecision{status: wire.StatusApprovalRequired, reason: fmt.Sprintf("approval required (postern request %s)", res.name)}
		}
		d.until = grantEnd
		return d
	}
	if p.access.autoLock > 0 && !running && !granted {
		if last, ok := res.lastUse[cl.Subject]; ok && now.Sub(last) > p.access.autoLock {
			return accessDecision{status: wire.StatusApprovalRequired, reason: fmt.Sprintf("locked: unused for %s (postern request %s)", policy.FormatDuration(p.access.autoLock), res.name)}
		}
	}
	return d
}
