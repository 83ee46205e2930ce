package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"postern.dev/postern/controller/store"
)

// Change is one step of a plan.
type Change struct {
	Op     string   `json:"op"` // create, update, delete
	Kind   string   `json:"kind"`
	Name   string   `json:"name"`
	Fields []string `json:"fields,omitempty"` // update: the fields that change
}

// Plan is what an apply does (or, with DryRun, would do).
type Plan struct {
	DryRun   bool     `json:"dry_run"`
	Changes  []Change `json:"changes"`
	Revision int64    `json:"revision"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

// String renders the plan for people: "+ create", "~ update", "- delete".
func (p *Plan) String() string {
	if p.Empty() {
		return "No changes: the controller already matches the file.\n"
	}
	var b strings.Builder
	counts := map[string]int{}
	for _, c := range p.Changes {
		sym := map[string]string{"create": "+", "update": "~", "delete": "-"}[c.Op]
		fmt.Fprintf(&b, "%s %s %s", sym, c.Kind, c.Name)
		if len(c.Fields) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(c.Fields, ", "))
		}
		b.WriteString("\n")
		counts[c.Op]++
	}
	verb := "Applied"
	if p.DryRun {
		verb = "Dry run, nothing changed. Would apply"
	}
	fmt.Fprintf(&b, "%s: %d to create, %d to update, %d to delete.\n", verb, counts["create"], counts["update"], counts["delete"])
	return b.String()
}

// declarative kinds in the order creates are made; deletes run in reverse.
var declKinds = []string{KindNetwork, KindConnector, KindGroup, KindUser, KindServiceAccount, KindPostureProfile, KindResource, KindAccessSettings, KindClientSettings}

type desiredObj struct {
	kind, name string
	// merge returns the record to store given the current one (nil data when
	// creating) and the names of the fields that differ.
	merge func(cur json.RawMessage, id string) (any, []string, error)
}

func strs(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func diffField(fields []string, name string, a, b any) []string {
	if !reflect.DeepEqual(a, b) {
		return append(fields, name)
	}
	return fields
}

func decodeInto(cur json.RawMessage, v any) error {
	if len(cur) == 0 {
		return nil
	}
	return json.Unmarshal(cur, v)
}

// desiredObjects turns a normalized spec into the records it asks for.
// hashes gives the password hash to store per user email.
func desiredObjects(spec *Spec, hashes map[string]string, now time.Time) []desiredObj {
	var out []desiredObj
	for _, n := range spec.RemoteNetworks {
		n := n
		out = append(out, desiredObj{KindNetwork, n.Name, func(cur json.RawMessage, id string) (any, []string, error) {
			return &Network{ID: id, Name: n.Name}, nil, nil
		}})
		for _, cn := range n.Connectors {
			cn := cn
			out = append(out, desiredObj{KindConnector, cn, func(cur json.RawMessage, id string) (any, []string, error) {
				c := &Connector{}
				if err := decodeInto(cur, c); err != nil {
					return nil, nil, err
				}
				f := diffField(nil, "network", c.Network, n.Name)
				c.ID, c.Name, c.Network = id, cn, n.Name
				return c, f, nil
			}})
		}
	}
	for _, g := range spec.Groups {
		g := g
		out = append(out, desiredObj{KindGroup, g.Name, func(cur json.RawMessage, id string) (any, []string, error) {
			v := &Group{}
			if err := decodeInto(cur, v); err != nil {
				return nil, nil, err
			}
			f := diffField(nil, "users", strs(v.Users), strs(g.Users))
			v.ID, v.Name, v.Users = id, g.Name, strs(g.Users)
			return v, f, nil
		}})
	}
	for _, u := range spec.Users {
		u := u
		out = append(out, desiredObj{KindUser, u.Email, func(cur json.RawMessage, id string) (any, []string, error) {
			v := &User{}
			if err := decodeInto(cur, v); err != nil {
				return nil, nil, err
			}
			hash := u.PasswordHash
			if u.Password != "" {
				hash = hashes[u.Email]
			}
			f := diffField(nil, "password", v.PasswordHash, hash)
			f = diffField(f, "disabled", v.Disabled, u.Disabled)
			if u.OIDCSubject != "" && u.OIDCSubject != v.IdPSubject {
				// An administrator's binding: the issuer is recorded by
				// the subject's first sign-in.
				f = append(f, "oidc_subject")
				v.IdPSubject, v.IdPIssuer = u.OIDCSubject, ""
			}
			v.ID, v.Email, v.PasswordHash, v.Disabled = id, u.Email, hash, u.Disabled
			if v.Source == "" {
				v.Source = "builtin"
			}
			return v, f, nil
		}})
	}
	for _, s := range spec.ServiceAccounts {
		s := s
		out = append(out, desiredObj{KindServiceAccount, s.Name, func(cur json.RawMessage, id string) (any, []string, error) {
			v := &ServiceAccount{}
			if err := decodeInto(cur, v); err != nil {
				return nil, nil, err
			}
			f := diffField(nil, "groups", strs(v.Groups), strs(s.Groups))
			v.ID, v.Name, v.Groups = id, s.Name, strs(s.Groups)
			return v, f, nil
		}})
	}
	for _, r := range spec.Resources {
		r := r
		out = append(out, desiredObj{KindResource, r.Name, func(cur json.RawMessage, id string) (any, []string, error) {
			v := &Resource{}
			if err := decodeInto(cur, v); err != nil {
				return nil, nil, err
			}
			f := diffField(nil, "address", v.Address, r.Address)
			f = diffField(f, "alias", v.Alias, r.Alias)
			f = diffField(f, "network", v.Network, r.Network)
			f = diffField(f, "ports", strs(v.Ports), strs(r.Ports))
			f = diffField(f, "groups", strs(v.Groups), strs(r.Groups))
			f = diffField(f, "require", v.Require, r.Require)
			*v = Resource{ID: id, Name: r.Name, Alias: r.Alias, Address: r.Address, Network: r.Network, Ports: strs(r.Ports), Groups: strs(r.Groups), Require: r.Require}
			return v, f, nil
		}})
	}
	for _, p := range spec.PostureProfiles {
		p := p
		out = append(out, desiredObj{KindPostureProfile, p.Name, func(cur json.RawMessage, id string) (any, []string, error) {
			v := &PostureProfile{}
			if err := decodeInto(cur, v); err != nil {
				return nil, nil, err
			}
			var f []string
			if len(cur) > 0 && !reflect.DeepEqual(v.PostureProfileSpec, p) {
				f = append(f, "profile")
			}
			return &PostureProfile{ID: id, PostureProfileSpec: p}, f, nil
		}})
	}
	if spec.AutoLock != "" {
		out = append(out, desiredObj{KindAccessSettings, accessSettingsName, func(cur json.RawMessage, id string) (any, []string, error) {
			v := &AccessSettings{}
			if err := decodeInto(cur, v); err != nil {
				return nil, nil, err
			}
			f := diffField(nil, "auto_lock", v.AutoLock, spec.AutoLock)
			if len(f) > 0 || v.Since.IsZero() {
				v.Since = now
			}
			v.ID, v.Name, v.AutoLock = id, accessSettingsName, spec.AutoLock
			return v, f, nil
		}})
	}
	return append(out, desiredClientSettings(spec)...)
}

// redact drops secrets from a record before it goes to the audit log.
func redact(kind string, data []byte) json.RawMessage {
	if len(data) == 0 {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(data, &m) != nil {
		return nil
	}
	for _, k := range []string{"password_hash", "secret_sha256", "token_sha256", "external"} {
		if _, ok := m[k]; ok {
			m[k] = "<redacted>"
		}
	}
	if keys, ok := m["keys"].([]any); ok {
		for _, k := range keys {
			if km, ok := k.(map[string]any); ok {
				km["secret_sha256"] = "<redacted>"
			}
		}
	}
	b, _ := json.Marshal(m)
	return b
}

// reconcile makes the declarative kinds in tx match spec (when execute) and
// returns the plan. Objects not in spec are deleted, except users created by
// single sign-on.
func reconcile(tx store.Tx, spec *Spec, hashes map[string]string, actor string, execute bool, now time.Time) (*Plan, error) {
	plan := &Plan{Changes: []Change{}}
	current := map[string]map[string]store.Object{}
	for _, k := range declKinds {
		objs, err := tx.List(k)
		if err != nil {
			return nil, err
		}
		current[k] = make(map[string]store.Object, len(objs))
		for _, o := range objs {
			current[k][o.Name] = o
		}
	}
	wanted := map[string]map[string]bool{}
	for _, k := range declKinds {
		wanted[k] = map[string]bool{}
	}
	desired := desiredObjects(spec, hashes, now)
	sort.SliceStable(desired, func(i, j int) bool { return kindOrder(desired[i].kind) < kindOrder(desired[j].kind) })
	for _, d := range desired {
		wanted[d.kind][d.name] = true
		cur, exists := current[d.kind][d.name]
		id := cur.ID
		if !exists {
			id = newID(idPrefix(d.kind))
		}
		rec, fields, err := d.merge(cur.Data, id)
		if err != nil {
			return nil, fmt.Errorf("%s %q: stored record: %w", d.kind, d.name, err)
		}
		if exists && len(fields) == 0 {
			continue
		}
		op := "create"
		if exists {
			op = "update"
		} else {
			fields = nil
		}
		plan.Changes = append(plan.Changes, Change{Op: op, Kind: d.kind, Name: d.name, Fields: fields})
		if !execute {
			continue
		}
		obj, err := toObject(d.kind, id, d.name, rec)
		if err != nil {
			return nil, err
		}
		if err := tx.Put(obj); err != nil {
			return nil, err
		}
		if err := tx.Audit(store.AuditEntry{Actor: actor, Action: op, Kind: d.kind, ObjectID: id, Name: d.name,
			Before: redact(d.kind, cur.Data), After: redact(d.kind, obj.Data)}); err != nil {
			return nil, err
		}
		if err := auditCredentialChange(tx, actor, d.kind, op, id, d.name, fields); err != nil {
			return nil, err
		}
	}
	if err := unbindSubjects(tx, spec, current[KindUser], actor, execute, plan); err != nil {
		return nil, err
	}
	for i := len(declKinds) - 1; i >= 0; i-- {
		k := declKinds[i]
		names := make([]string, 0)
		for name, o := range current[k] {
			if wanted[k][name] {
				continue
			}
			if k == KindUser {
				var u User
				if json.Unmarshal(o.Data, &u) == nil && u.Source == "oidc" {
					continue
				}
			}
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			o := current[k][name]
			plan.Changes = append(plan.Changes, Change{Op: "delete", Kind: k, Name: name})
			if !execute {
				continue
			}
			if err := tx.Delete(k, o.ID); err != nil {
				return nil, err
			}
			if err := tx.Audit(store.AuditEntry{Actor: actor, Action: "delete", Kind: k, ObjectID: o.ID, Name: name, Before: redact(k, o.Data)}); err != nil {
				return nil, err
			}
		}
	}
	return plan, nil
}

// auditCredentialChange adds a "credential-change" entry naming the
// credential fields an update of a user changed (password, oidc_subject),
// which the update entry itself shows only redacted.
func auditCredentialChange(tx store.Tx, actor, kind, op, id, name string, fields []string) error {
	if kind != KindUser || op != "update" {
		return nil
	}
	var changed []string
	for _, f := range fields {
		if f == "password" || f == "oidc_subject" {
			changed = append(changed, f)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	after, _ := json.Marshal(map[string]any{"changed": changed})
	return tx.Audit(store.AuditEntry{Actor: actor, Action: "credential-change", Kind: kind, ObjectID: id, Name: name, After: after})
}

// unbindSubjects removes the subject binding of accounts single sign-on
// created when an administrator binds that subject to another account
// (oidc_subject): the subject then signs in as the bound account only, and
// the old account's sessions end with its binding.
func unbindSubjects(tx store.Tx, spec *Spec, users map[string]store.Object, actor string, execute bool, plan *Plan) error {
	boundTo := map[string]string{}
	for _, u := range spec.Users {
		if u.OIDCSubject != "" {
			boundTo[u.OIDCSubject] = u.Email
		}
	}
	if len(boundTo) == 0 {
		return nil
	}
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		o := users[name]
		var u User
		if json.Unmarshal(o.Data, &u) != nil || u.Source != "oidc" || u.IdPSubject == "" {
			continue
		}
		if owner, ok := boundTo[u.IdPSubject]; !ok || owner == u.Email {
			continue
		}
		plan.Changes = append(plan.Changes, Change{Op: "update", Kind: KindUser, Name: name, Fields: []string{"oidc_subject"}})
		if !execute {
			continue
		}
		u.IdPSubject, u.IdPIssuer = "", ""
		no, err := toObject(KindUser, u.ID, name, &u)
		if err != nil {
			return err
		}
		if err := tx.Put(no); err != nil {
			return err
		}
		if err := tx.Audit(store.AuditEntry{Actor: actor, Action: "update", Kind: KindUser, ObjectID: u.ID, Name: name,
			Before: redact(KindUser, o.Data), After: redact(KindUser, no.Data)}); err != nil {
			return err
		}
		if err := auditCredentialChange(tx, actor, KindUser, "update", u.ID, name, []string{"oidc_subject"}); err != nil {
			return err
		}
	}
	return nil
}

func kindOrder(k string) int {
	for i, d := range declKinds {
		if d == k {
			return i
		}
	}
	return len(declKinds)
}

// passwordHashes decides the hash to store for each user with a plaintext
// password: the current hash when it already matches (so a second apply is
// empty), else a fresh argon2id hash.
func (c *Controller) passwordHashes(spec *Spec) (map[string]string, error) {
	m := c.model()
	out := map[string]string{}
	for _, u := range spec.Users {
		if u.Password == "" {
			continue
		}
		if cur, ok := m.UserByEmail[u.Email]; ok && verifyPassword(cur.PasswordHash, u.Password) {
			out[u.Email] = cur.PasswordHash
			continue
		}
		h, err := hashPassword(u.Password)
		if err != nil {
			return nil, err
		}
		out[u.Email] = h
	}
	return out, nil
}

// ApplyYAML validates a network.yaml document as a whole and then makes the
// store match it in one transaction (or, with dryRun, only plans). It is the
// code path of `postern-controller apply` and POST /api/v1/apply.
func (c *Controller) ApplyYAML(ctx context.Context, data []byte, dryRun bool) (*Plan, error) {
	return c.applyYAML(ctx, "admin", data, dryRun)
}

func (c *Controller) applyYAML(ctx context.Context, actor string, data []byte, dryRun bool) (*Plan, error) {
	spec, lines, err := ParseSpec(data)
	if err != nil {
		return nil, err
	}
	if err := normalizeSpec(spec, lines); err != nil {
		return nil, err
	}
	hashes, err := c.passwordHashes(spec)
	if err != nil {
		return nil, err
	}
	if dryRun {
		var plan *Plan
		err := c.store.View(ctx, func(tx store.Tx) error {
			var err error
			plan, err = reconcile(tx, spec, hashes, actor, false, c.now())
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("plan apply: %w", err)
		}
		plan.DryRun = true
		plan.Revision = c.model().Rev
		return plan, nil
	}
	var plan *Plan
	rev, _, err := c.commit(ctx, func(tx store.Tx) error {
		var err error
		if plan, err = reconcile(tx, spec, hashes, actor, true, c.now()); err != nil {
			return err
		}
		_, err = sweepSessions(tx, actor, c.now())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	if err := c.reload(ctx); err != nil {
		return nil, err
	}
	plan.Revision = rev
	c.log.Info("applied network configuration", "actor", actor, "changes", len(plan.Changes), "rev", rev)
	return plan, nil
}

// ErrSpecMutation is returned by a mutation that cannot be made.
var errSpecMutation = errors.New("cannot change")

// mutateSpec is the single-object admin API path: read the declarative state,
// change it, validate the whole result and reconcile in one transaction.
func (c *Controller) mutateSpec(ctx context.Context, actor string, mutate func(*Spec) error) (*Plan, error) {
	var plan *Plan
	rev, _, err := c.commit(ctx, func(tx store.Tx) error {
		spec, err := specFromTx(tx)
		if err != nil {
			return err
		}
		if err := mutate(spec); err != nil {
			return err
		}
		if err := normalizeSpec(spec, nil); err != nil {
			return err
		}
		if plan, err = reconcile(tx, spec, nil, actor, true, c.now()); err != nil {
			return err
		}
		_, err = sweepSessions(tx, actor, c.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := c.reload(ctx); err != nil {
		return nil, err
	}
	plan.Revision = rev
	return plan, nil
}
