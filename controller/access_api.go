package controller

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/policy"
)

// Access governance endpoints: second factor (access_mfa.go), posture
// reports, just-in-time access requests, and last-use tracking from the
// connectors' flow events.

// Errors of access requests (their statuses are the api's).
var (
	ErrRequest       = api.ErrRequest
	ErrNotApprover   = api.ErrNotApprover
	ErrSelfApproval  = api.ErrSelfApproval
	ErrRequestState  = api.ErrRequestState
	ErrNoSuchRequest = api.ErrNoSuchRequest
)

// ReportPosture records the device's posture report (when it changed) and
// answers the verdict for every profile (api.ClientSession).
func (cs *clientSession) ReportPosture(ctx context.Context, signed controlapi.SignedPosture) (controlapi.PostureVerdict, error) {
	c, s, m := cs.c, cs.s, cs.m
	rep, err := m.verifyPosture(s.DeviceID, signed, c.now())
	if err != nil {
		return controlapi.PostureVerdict{}, fmt.Errorf("%w: %v", api.ErrPostureReport, err)
	}
	rep.Reported = time.Time{} // stored only when the facts change
	if rep.OS == "" || len(rep.OSVersion) > 64 || len(rep.ClientVersion) > 64 || len(rep.OSName) > 128 {
		return controlapi.PostureVerdict{}, fmt.Errorf("%w: os is required; os_version and client_version at most 64 characters", api.ErrPostureReport)
	}
	if cur := m.access.posture[s.DeviceID]; cur == nil || !reflect.DeepEqual(cur.Report, rep) {
		_, _, err = c.commit(ctx, func(tx store.Tx) error {
			id := newID("pst")
			var before json.RawMessage
			if o, err := tx.GetByName(KindPosture, s.DeviceID); err == nil {
				id, before = o.ID, o.Data
			}
			rec := &PostureRecord{ID: id, Device: s.DeviceID, Report: rep, Reported: c.now().UTC()}
			o, err := toObject(KindPosture, id, s.DeviceID, rec)
			if err != nil {
				return err
			}
			if err := tx.Put(o); err != nil {
				return err
			}
			return tx.Audit(store.AuditEntry{Actor: principalName(m, s.PrincipalID), Action: "posture-report", Kind: KindPosture, ObjectID: id,
				Name: s.DeviceID, Device: s.DeviceID, Before: before, After: o.Data})
		})
		if err != nil {
			return controlapi.PostureVerdict{}, fmt.Errorf("store posture report: %w", err)
		}
		m = c.model()
	}
	sat, failed := m.devicePosture(s.DeviceID)
	return controlapi.PostureVerdict{Satisfied: sat, Failed: failed}, nil
}

// verifyPosture checks a signed report against the device's key and the
// clock, and decodes it.
func (m *Model) verifyPosture(device string, sp controlapi.SignedPosture, now time.Time) (controlapi.PostureReport, error) {
	var rep controlapi.PostureReport
	dev, ok := m.Devices[device]
	if !ok {
		return rep, errors.New("unknown device")
	}
	pub, err := base64.StdEncoding.DecodeString(dev.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return rep, errors.New("device key unusable")
	}
	sig, err := base64.StdEncoding.DecodeString(sp.Signature)
	if err != nil || !ed25519.Verify(ed25519.PublicKey(pub), controlapi.PostureSigningInput(sp.Report, device), sig) {
		return rep, errors.New("signature does not verify with this device's key")
	}
	if err := json.Unmarshal(sp.Report, &rep); err != nil {
		return rep, fmt.Errorf("decode: %w", err)
	}
	if d := now.Sub(rep.Reported); d > controlapi.PostureMaxSkew || d < -controlapi.PostureMaxSkew {
		return rep, fmt.Errorf("reported at %s, more than %s from the controller's clock", rep.Reported.UTC().Format(time.RFC3339), controlapi.PostureMaxSkew)
	}
	return rep, nil
}

func principalName(m *Model, pid string) string {
	if p, ok := m.principal(pid); ok {
		return p.Name
	}
	return pid
}

func (m *Model) resourceByKey(key string) *Resource {
	for _, r := range m.Resources {
		if r.ID == key || r.Name == key {
			return r
		}
	}
	return nil
}

// requestView is the API form of a request at now, for caller pid ("" for
// the admin).
func (m *Model) requestView(r *AccessRequestRec, pid string, now time.Time) controlapi.AccessRequest {
	v := controlapi.AccessRequest{ID: r.ID, Resource: r.ResourceName, ResourceID: r.ResourceID, Requester: r.RequesterName, RequesterID: r.RequesterID,
		Duration: r.Duration, Reason: r.Reason, State: r.state(now), Created: r.Created, DecidedBy: r.DecidedBy, DecidedAt: r.DecidedAt,
		DecideReason: r.DecideReason, Start: r.Start, End: r.End}
	if res := m.resourceByKey(r.ResourceID); res != nil && pid != "" && pid != r.RequesterID && r.State == reqPending {
		v.CanDecide = m.approverOf(pid, res)
	}
	return v
}

// requestsFor lists requests by pid and those pid may decide (all for the admin), newest first.
func (m *Model) requestsFor(pid string, admin bool, now time.Time) []controlapi.AccessRequest {
	out := []controlapi.AccessRequest{}
	for _, r := range m.access.requests {
		res := m.resourceByKey(r.ResourceID)
		if admin || r.RequesterID == pid || (res != nil && m.approverOf(pid, res)) {
			out = append(out, m.requestView(r, pid, now))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// AccessRequests lists the requests of the session's account and those it
// may decide (api.ClientSession).
func (cs *clientSession) AccessRequests() []controlapi.AccessRequest {
	return cs.m.requestsFor(cs.s.PrincipalID, false, cs.c.now())
}

// AllAccessRequests lists every access request (api.AccessRequests).
func (c *Controller) AllAccessRequests() []controlapi.AccessRequest {
	return c.model().requestsFor("", true, c.now())
}

// createRequest validates and stores a pending request by pid.
func (c *Controller) createRequest(ctx context.Context, m *Model, pid, device string, req controlapi.AccessRequestCreate) (*AccessRequestRec, error) {
	res := m.resourceByKey(strings.TrimSpace(req.Resource))
	if res == nil || !m.mayReach(pid, res) {
		return nil, fmt.Errorf("%w: resource %q: no such resource for this account", ErrRequest, req.Resource)
	}
	now := c.now()
	max := maxGrant(res.Require)
	locked := max == 0 && m.autoLock() > 0 && now.Sub(m.lastUse(pid, res.ID)) > m.autoLock()
	if max == 0 && !locked {
		return nil, fmt.Errorf("%w: resource %s needs no request: it requires no approval and is not locked", ErrRequest, res.Name)
	}
	d, err := policy.ParseDuration(req.Duration)
	if err != nil {
		return nil, fmt.Errorf("%w: duration: %v", ErrRequest, err)
	}
	if max > 0 && d > max {
		return nil, fmt.Errorf("%w: duration %s is longer than the %s this resource allows", ErrRequest, req.Duration, fmtDur(max))
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" || len(reason) > 500 {
		return nil, fmt.Errorf("%w: reason: required, at most 500 characters", ErrRequest)
	}
	for _, o := range m.access.requests {
		if o.RequesterID == pid && o.ResourceID == res.ID && o.State == reqPending {
			return nil, fmt.Errorf("%w: request %s for %s is already pending", ErrRequest, o.ID, res.Name)
		}
	}
	rec := &AccessRequestRec{ID: newID("req"), ResourceID: res.ID, ResourceName: res.Name, RequesterID: pid, RequesterName: principalName(m, pid),
		Duration: fmtDur(d), Reason: reason, State: reqPending, Created: now.UTC()}
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		o, err := toObject(KindAccessRequest, rec.ID, rec.ID, rec)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: rec.RequesterName, Action: "access-request", Kind: KindAccessRequest, ObjectID: rec.ID,
			Name: res.Name, Device: device, After: o.Data})
	})
	if err != nil {
		return nil, fmt.Errorf("store access request: %w", err)
	}
	return rec, nil
}

// RequestAccess files a pending access request of the session's account
// (api.ClientSession).
func (cs *clientSession) RequestAccess(ctx context.Context, req controlapi.AccessRequestCreate) (controlapi.AccessRequest, error) {
	rec, err := cs.c.createRequest(ctx, cs.m, cs.s.PrincipalID, cs.s.DeviceID, req)
	if err != nil {
		return controlapi.AccessRequest{}, err
	}
	return cs.c.model().requestView(rec, cs.s.PrincipalID, cs.c.now()), nil
}

// decide approves or denies request id. approver is the deciding principal
// ("" for the admin API, which may decide any request); actor names them
// in the audit log.
func (c *Controller) decide(ctx context.Context, id, approver, actor, device, verb string, dec controlapi.AccessDecision) (*AccessRequestRec, error) {
	if verb != "approve" && verb != "deny" {
		return nil, fmt.Errorf("%w: %q (use approve or deny)", ErrRequest, verb)
	}
	m := c.model()
	cur := m.access.requests[id]
	if cur == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoSuchRequest, id)
	}
	rec := *cur
	res := m.resourceByKey(rec.ResourceID)
	if res == nil {
		return nil, fmt.Errorf("%w: resource %s no longer exists", ErrRequest, rec.ResourceName)
	}
	if approver != "" {
		if approver == rec.RequesterID {
			return nil, ErrSelfApproval
		}
		if !m.approverOf(approver, res) {
			return nil, fmt.Errorf("%w %s", ErrNotApprover, res.Name)
		}
	}
	if rec.State != reqPending {
		return nil, fmt.Errorf("%w: %s is %s", ErrRequestState, id, rec.state(c.now()))
	}
	now := c.now().UTC()
	rec.DecidedBy, rec.DecidedAt, rec.DecideReason = actor, now, strings.TrimSpace(dec.Reason)
	if verb == "deny" {
		if rec.DecideReason == "" {
			return nil, fmt.Errorf("%w: a reason is required to deny", ErrRequest)
		}
		rec.State = reqDenied
	} else {
		d, _ := policy.ParseDuration(rec.Duration)
		if dec.Duration != "" {
			dd, err := policy.ParseDuration(dec.Duration)
			if err != nil {
				return nil, fmt.Errorf("%w: duration: %v", ErrRequest, err)
			}
			d = dd
		}
		if max := maxGrant(res.Require); max > 0 && d > max {
			return nil, fmt.Errorf("%w: duration %s is longer than the %s this resource allows", ErrRequest, fmtDur(d), fmtDur(max))
		}
		rec.State, rec.Start, rec.End, rec.Duration = reqApproved, now, now.Add(d), fmtDur(d)
	}
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := tx.Get(KindAccessRequest, id)
		if err != nil {
			return err
		}
		var stored AccessRequestRec
		if err := json.Unmarshal(o.Data, &stored); err != nil {
			return err
		}
		if stored.State != reqPending {
			return fmt.Errorf("%w: %s is %s", ErrRequestState, id, stored.State)
		}
		no, err := toObject(KindAccessRequest, id, id, &rec)
		if err != nil {
			return err
		}
		if err := tx.Put(no); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: actor, Action: "access-" + verb, Kind: KindAccessRequest, ObjectID: id, Name: res.Name,
			Device: device, Before: o.Data, After: no.Data})
	})
	if err != nil {
		return nil, err
	}
	c.log.Info("access request decided", "id", id, "verb", verb, "by", actor, "resource", res.Name, "requester", rec.RequesterName, "end", rec.End)
	return &rec, nil
}

// DecideAccessRequest approves or denies request id as the session's
// account (api.ClientSession).
func (cs *clientSession) DecideAccessRequest(ctx context.Context, id, verb string, dec controlapi.AccessDecision) (controlapi.AccessRequest, error) {
	pid := cs.s.PrincipalID
	rec, err := cs.c.decide(ctx, id, pid, principalName(cs.m, pid), cs.s.DeviceID, verb, dec)
	if err != nil {
		return controlapi.AccessRequest{}, err
	}
	return cs.c.model().requestView(rec, pid, cs.c.now()), nil
}

// DecideAccessRequest approves or denies request id as the admin in ctx
// (api.AccessRequests).
func (c *Controller) DecideAccessRequest(ctx context.Context, id, verb string, dec controlapi.AccessDecision) (controlapi.AccessRequest, error) {
	rec, err := c.decide(ctx, id, "", adminName(ctx), "", verb, dec)
	if err != nil {
		return controlapi.AccessRequest{}, err
	}
	return c.model().requestView(rec, "", c.now()), nil
}

// useGranularity: a principal's last use of a resource is written at most
// this often (auto-lock windows are days).
const useGranularity = time.Hour

// usedFlow reports whether a flow event is a use of the resource (it was
// established), not a refusal.
func usedFlow(e controlapi.FlowEvent) bool {
	switch e.Result {
	case "ok", "closed by policy", "idle timeout", "reset":
		return e.Principal != "" && e.ResourceID != ""
	}
	return false
}

// recordUse moves the last use of each (principal, resource) in events
// forward, when auto-lock is on and the stored one is older than
// useGranularity.
func (c *Controller) recordUse(ctx context.Context, events []controlapi.FlowEvent) error {
	m := c.model()
	if m.autoLock() == 0 {
		return nil
	}
	now := c.now().UTC()
	todo := map[string][2]string{}
	for _, e := range events {
		if !usedFlow(e) {
			continue
		}
		k := accessUseName(e.Principal, e.ResourceID)
		if u := m.access.use[k]; u != nil && now.Sub(u.Last) < useGranularity {
			continue
		}
		todo[k] = [2]string{e.Principal, e.ResourceID}
	}
	if len(todo) == 0 {
		return nil
	}
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		for k, pr := range todo {
			id := newID("use")
			if o, err := tx.GetByName(KindAccessUse, k); err == nil {
				id = o.ID
			}
			o, err := toObject(KindAccessUse, id, k, &AccessUse{ID: id, Principal: pr[0], Resource: pr[1], Last: now})
			if err != nil {
				return err
			}
			if err := tx.Put(o); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}
