package controller

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// MFAEnrollment is a user's TOTP enrollment. The secret is sealed
// (AES-256-GCM, key derived from the deployment CA key, the user id as
// associated data): the database alone does not give the codes.
type MFAEnrollment struct {
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	Nonce     []byte    `json:"nonce"`
	Sealed    []byte    `json:"sealed"`
	Confirmed bool      `json:"confirmed,omitempty"`
	Created   time.Time `json:"created"`
	// LastStep is the TOTP time step of the last accepted code: a code is
	// accepted once, and never one older than it.
	LastStep int64 `json:"last_step,omitempty"`
}

// PostureRecord is a device's latest posture report.
type PostureRecord struct {
	ID       string                   `json:"id"`
	Device   string                   `json:"device"`
	Report   controlapi.PostureReport `json:"report"`
	Reported time.Time                `json:"reported"`
}

// Access request states as stored; "active" and "expired" are derived from
// an approved request's end.
const (
	reqPending  = "pending"
	reqApproved = "approved"
	reqDenied   = "denied"
	reqActive   = "active"
	reqExpired  = "expired"
)

// AccessRequestRec is a stored just-in-time access request.
type AccessRequestRec struct {
	ID            string    `json:"id"`
	ResourceID    string    `json:"resource_id"`
	ResourceName  string    `json:"resource_name"`
	RequesterID   string    `json:"requester_id"`
	RequesterName string    `json:"requester_name"`
	Duration      string    `json:"duration"`
	Reason        string    `json:"reason"`
	State         string    `json:"state"`
	Created       time.Time `json:"created"`
	DecidedBy     string    `json:"decided_by,omitempty"`
	DecidedAt     time.Time `json:"decided_at,omitzero"`
	DecideReason  string    `json:"decide_reason,omitempty"`
	Start         time.Time `json:"start,omitzero"`
	End           time.Time `json:"end,omitzero"`
}

// state is the request's state at now.
func (r *AccessRequestRec) state(now time.Time) string {
	if r.State != reqApproved {
		return r.State
	}
	if now.Before(r.End) {
		return reqActive
	}
	return reqExpired
}

// AccessUse is a principal's last use of a resource (for auto-lock).
type AccessUse struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal"`
	Resource  string    `json:"resource"`
	Last      time.Time `json:"last"`
}

func accessUseName(pid, rid string) string { return pid + "/" + rid }

// accessModel is the access-governance part of a Model.
type accessModel struct {
	profiles map[string]*PostureProfile // by name
	settings *AccessSettings
	mfa      map[string]*MFAEnrollment    // by user id
	webauthn map[string][]*WebAuthnKey    // by user id (webauthn.go)
	posture  map[string]*PostureRecord    // by device id
	requests map[string]*AccessRequestRec // by id
	use      map[string]*AccessUse        // by accessUseName
}

// add loads one stored object of an access kind; other kinds are ignored.
func (a *accessModel) add(o store.Object) error {
	var err error
	switch o.Kind {
	case KindPostureProfile:
		v := new(PostureProfile)
		if err = json.Unmarshal(o.Data, v); err == nil {
			if a.profiles == nil {
				a.profiles = map[string]*PostureProfile{}
			}
			a.profiles[v.Name] = v
		}
	case KindAccessSettings:
		v := new(AccessSettings)
		if err = json.Unmarshal(o.Data, v); err == nil {
			a.settings = v
		}
	case KindMFA:
		v := new(MFAEnrollment)
		if err = json.Unmarshal(o.Data, v); err == nil {
			if a.mfa == nil {
				a.mfa = map[string]*MFAEnrollment{}
			}
			a.mfa[v.UserID] = v
		}
	case KindWebAuthn:
		v := new(WebAuthnKey)
		if err = json.Unmarshal(o.Data, v); err == nil {
			if a.webauthn == nil {
				a.webauthn = map[string][]*WebAuthnKey{}
			}
			a.webauthn[v.UserID] = append(a.webauthn[v.UserID], v)
		}
	case KindPosture:
		v := new(PostureRecord)
		if err = json.Unmarshal(o.Data, v); err == nil {
			if a.posture == nil {
				a.posture = map[string]*PostureRecord{}
			}
			a.posture[v.Device] = v
		}
	case KindAccessRequest:
		v := new(AccessRequestRec)
		if err = json.Unmarshal(o.Data, v); err == nil {
			if a.requests == nil {
				a.requests = map[string]*AccessRequestRec{}
			}
			a.requests[v.ID] = v
		}
	case KindAccessUse:
		v := new(AccessUse)
		if err = json.Unmarshal(o.Data, v); err == nil {
			if a.use == nil {
				a.use = map[string]*AccessUse{}
			}
			a.use[accessUseName(v.Principal, v.Resource)] = v
		}
	}
	return err
}

// compareVersions compares dotted versions numerically, reading the leading
// digits of each part ("6.1.0-13-amd64" is 6.1.0); missing parts are 0.
func compareVersions(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

func versionParts(v string) []int {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	var out []int
	for _, p := range strings.Split(v, ".") {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		n, _ := strconv.Atoi(p[:end])
		out = append(out, n)
		if end < len(p) {
			break // "0-13-amd64": the rest is not part of the number
		}
	}
	return out
}

// evaluatePosture says why report does not satisfy profile p ("" when it
// does).
func evaluatePosture(p *PostureProfileSpec, r controlapi.PostureReport) string {
	if len(p.OSMin) > 0 {
		minV, ok := p.OSMin[r.OS]
		switch {
		case !ok:
			return fmt.Sprintf("OS %q not allowed", r.OS)
		case compareVersions(r.OSVersion, minV) < 0:
			return fmt.Sprintf("OS version %s below %s", r.OSVersion, minV)
		}
	}
	if p.DiskEncryption && !r.DiskEncryption {
		return "disk encryption off"
	}
	if p.Firewall && !r.Firewall {
		return "firewall off"
	}
	if p.ClientMin != "" && compareVersions(r.ClientVersion, p.ClientMin) < 0 {
		return fmt.Sprintf("client %s older than %s", r.ClientVersion, p.ClientMin)
	}
	return ""
}

// devicePosture evaluates every profile for device: the satisfied profiles
// (sorted) and, per failed profile, why. A device that never reported
// satisfies nothing.
func (m *Model) devicePosture(device string) ([]string, map[string]string) {
	sat := []string{}
	failed := map[string]string{}
	rec := m.access.posture[device]
	for name, p := range m.access.profiles {
		if rec == nil {
			failed[name] = "no posture report from this device"
			continue
		}
		if why := evaluatePosture(&p.PostureProfileSpec, rec.Report); why != "" {
			failed[name] = why
		} else {
			sat = append(sat, name)
		}
	}
	sort.Strings(sat)
	return sat, failed
}

// deviceMFA is the device's last second factor: the latest over its active sessions.
func (m *Model) deviceMFA(device string) time.Time {
	var at time.Time
	for _, s := range m.Sessions {
		if s.DeviceID == device && s.MFAAt.After(at) {
			at = s.MFAAt
		}
	}
	return at
}

// grant returns the latest end of pid's approved requests for rid that
// are still running at now, and who approved it.
func (m *Model) grant(pid, rid string, now time.Time) (time.Time, string) {
	var end time.Time
	by := ""
	for _, r := range m.access.requests {
		if r.RequesterID == pid && r.ResourceID == rid && r.State == reqApproved && now.Before(r.End) && r.End.After(end) {
			end, by = r.End, r.DecidedBy
		}
	}
	return end, by
}

// autoLock is the configured auto-lock window (0: off).
func (m *Model) autoLock() time.Duration { return m.access.settings.autoLock() }

// lastUse is where pid's auto-lock window on rid starts: its last recorded
// use, its last approved request, or when auto-lock was turned on,
// whichever is latest.
func (m *Model) lastUse(pid, rid string) time.Time {
	var last time.Time
	if m.access.settings != nil {
		last = m.access.settings.Since
	}
	if u := m.access.use[accessUseName(pid, rid)]; u != nil && u.Last.After(last) {
		last = u.Last
	}
	for _, r := range m.access.requests {
		if r.RequesterID == pid && r.ResourceID == rid && (r.State == reqApproved || r.State == reqExpired) && r.Start.After(last) {
			last = r.Start
		}
	}
	return last
}

// connectorAccess is the connector-wide access state at now.
func (m *Model) connectorAccess(now time.Time) controlapi.ConnectorAccess {
	a := controlapi.ConnectorAccess{AutoLockSeconds: int64(m.autoLock() / time.Second)}
	for _, s := range m.Sessions {
		if s.MFAAt.IsZero() || !now.Before(s.ExpiresAt) {
			continue
		}
		if a.MFA == nil {
			a.MFA = map[string]time.Time{}
		}
		if s.MFAAt.After(a.MFA[s.DeviceID]) {
			a.MFA[s.DeviceID] = s.MFAAt.UTC()
		}
	}
	if len(m.access.profiles) > 0 {
		for dev := range m.access.posture {
			if a.DevicePosture == nil {
				a.DevicePosture = map[string][]string{}
			}
			a.DevicePosture[dev], _ = m.devicePosture(dev)
		}
	}
	return a
}

// connectorResourceAccess adds the running grants and, with auto-lock, the
// last use of each principal to a connector's view of r.
func (m *Model) connectorResourceAccess(cr *controlapi.ConnectorResource, r *Resource, principals []string, now time.Time) {
	for _, pid := range principals {
		if end, _ := m.grant(pid, r.ID, now); !end.IsZero() {
			if cr.Grants == nil {
				cr.Grants = map[string]time.Time{}
			}
			cr.Grants[pid] = end.UTC()
		}
		if m.autoLock() > 0 && maxGrant(r.Require) == 0 {
			if cr.LastUse == nil {
				cr.LastUse = map[string]time.Time{}
			}
			cr.LastUse[pid] = m.lastUse(pid, r.ID).UTC()
		}
	}
}

// accessClaims are the access claims of a Connection Token for session s
// on connector network net.
func (m *Model) accessClaims(s *Session, net string, now time.Time) (mfaAt int64, amr, posture []string, grants map[string]int64) {
	if !s.MFAAt.IsZero() {
		mfaAt, amr = s.MFAAt.Unix(), []string{cmp.Or(s.MFAMethod, amrOTP)}
	}
	if len(m.access.profiles) > 0 {
		posture, _ = m.devicePosture(s.DeviceID)
		if len(posture) == 0 {
			posture = nil
		}
	}
	for _, r := range m.Resources {
		if r.Network != net {
			continue
		}
		if end, _ := m.grant(s.PrincipalID, r.ID, now); !end.IsZero() {
			if grants == nil {
				grants = map[string]int64{}
			}
			grants[r.ID] = end.Unix()
		}
	}
	return mfaAt, amr, posture, grants
}

// resourceAccess says whether principal pid on device meets r's
// requirements at now, and what to do when not (nil: nothing required).
func (m *Model) resourceAccess(pid, device string, r *Resource, now time.Time) *controlapi.ResourceAccess {
	q := r.Require
	lock := m.autoLock() > 0 && maxGrant(q) == 0
	if q == nil && !lock {
		return nil
	}
	if q != nil && len(q.Posture) > 0 {
		_, failed := m.devicePosture(device)
		for _, p := range q.Posture {
			if why, bad := failed[p]; bad {
				return &controlapi.ResourceAccess{State: "posture", Message: "posture: " + why}
			}
			if _, ok := m.access.profiles[p]; !ok {
				return &controlapi.ResourceAccess{State: "posture", Message: fmt.Sprintf("posture: profile %q is not defined", p)}
			}
		}
	}
	var until time.Time
	if w := mfaWindow(q); w > 0 {
		at := m.deviceMFA(device)
		if at.IsZero() || now.Sub(at) > w {
			return &controlapi.ResourceAccess{State: "mfa", Message: "needs MFA (postern mfa)"}
		}
		until = at.Add(w)
	}
	end, by := m.grant(pid, r.ID, now)
	if maxGrant(q) > 0 {
		if end.IsZero() {
			return &controlapi.ResourceAccess{State: "approval", Message: fmt.Sprintf("needs approval (postern request %s)", r.Name)}
		}
		return &controlapi.ResourceAccess{State: "ok", Message: fmt.Sprintf("approved until %s by %s", end.Local().Format("15:04"), by), Until: end, ApprovedBy: by}
	}
	if lock && end.IsZero() && now.Sub(m.lastUse(pid, r.ID)) > m.autoLock() {
		return &controlapi.ResourceAccess{State: "locked", Message: fmt.Sprintf("locked: unused %s (postern request %s)", fmtDur(m.autoLock()), r.Name)}
	}
	return &controlapi.ResourceAccess{State: "ok", Until: until}
}

// annotateAccess fills Access of every resource of a client policy.
func (m *Model) annotateAccess(p *controlapi.ClientPolicy, pid, device string, now time.Time) {
	byID := map[string]*Resource{}
	for _, r := range m.Resources {
		byID[r.ID] = r
	}
	for i := range p.Resources {
		if r, ok := byID[p.Resources[i].ID]; ok {
			p.Resources[i].Access = m.resourceAccess(pid, device, r, now)
		}
	}
}

// approverOf reports whether principal pid may approve requests for r.
func (m *Model) approverOf(pid string, r *Resource) bool {
	if r.Require == nil || r.Require.Approval == nil {
		return false
	}
	for _, g := range r.Require.Approval.Approvers {
		if slices.Contains(m.groupMembers[g], pid) {
			return true
		}
	}
	return false
}
