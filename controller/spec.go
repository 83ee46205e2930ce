package controller

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/policy"
)

// Spec is the configuration: network.yaml, the body of apply and what GET
// /api/v1/spec answers. It and the types of its parts are the admin API's
// (package adminapi).
type Spec = adminapi.Spec

// ValidationError names the place in the file (or request) that is wrong.
type ValidationError struct {
	Line  int    `json:"line,omitempty"`
	Path  string `json:"path"`            // e.g. resources[3] (db)
	Field string `json:"field,omitempty"` // e.g. ports
	Msg   string `json:"message"`
}

func (e ValidationError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Path)
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// ValidationErrors is every problem found in one file.
type ValidationErrors []ValidationError

func (es ValidationErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// ErrInvalidSpec is wrapped by every spec parse and validation error.
var ErrInvalidSpec = errors.New("invalid network configuration")

// lineIndex maps section[i] and section[i].field to source lines.
type lineIndex map[string]int

func (li lineIndex) at(section string, i int, field string) int {
	if li == nil {
		return 0
	}
	for field != "" {
		if l, ok := li[fmt.Sprintf("%s[%d].%s", section, i, field)]; ok {
			return l
		}
		// "require.approval.max" falls back to "require.approval", then "require".
		cut := strings.LastIndexByte(field, '.')
		if cut < 0 {
			break
		}
		field = field[:cut]
	}
	return li[fmt.Sprintf("%s[%d]", section, i)]
}

func indexLines(doc *yaml.Node) lineIndex {
	li := lineIndex{}
	if doc == nil || len(doc.Content) == 0 {
		return li
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return li
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		sec, list := root.Content[i].Value, root.Content[i+1]
		li[sec] = root.Content[i].Line
		if list.Kind != yaml.SequenceNode {
			continue
		}
		for j, item := range list.Content {
			li[fmt.Sprintf("%s[%d]", sec, j)] = item.Line
			if item.Kind != yaml.MappingNode {
				continue
			}
			for k := 0; k+1 < len(item.Content); k += 2 {
				key := fmt.Sprintf("%s[%d].%s", sec, j, item.Content[k].Value)
				li[key] = item.Content[k].Line
				indexNested(li, key, item.Content[k+1])
			}
		}
	}
	return li
}

// indexNested records the lines of the keys of nested mappings (require:
// mfa, approval: max) under prefix.
func indexNested(li lineIndex, prefix string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for k := 0; k+1 < len(n.Content); k += 2 {
		key := prefix + "." + n.Content[k].Value
		li[key] = n.Content[k].Line
		indexNested(li, key, n.Content[k+1])
	}
}

// ParseSpec decodes network.yaml strictly: unknown keys, duplicate keys and
// wrong types are refused with their line.
func ParseSpec(data []byte) (*Spec, lineIndex, error) {
	var spec Spec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&spec); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidSpec, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, nil, fmt.Errorf("%w: line %d: only one YAML document is allowed", ErrInvalidSpec, extra.Line)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidSpec, err)
	}
	return &spec, indexLines(&doc), nil
}

func validObjectName(s string) error {
	if s == "" {
		return errors.New("is required")
	}
	if len(s) > 128 {
		return errors.New("is longer than 128 characters")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' {
			return fmt.Errorf("%q contains a space, control character or '/'", s)
		}
	}
	return nil
}

func validEmail(s string) error {
	if err := validObjectName(s); err != nil {
		return err
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.Count(s, "@") != 1 {
		return fmt.Errorf("%q is not an email address", s)
	}
	return nil
}

// normalizeSpec validates spec and rewrites addresses and ports to their
// canonical forms. It returns every problem found.
func normalizeSpec(spec *Spec, li lineIndex) error {
	var errs ValidationErrors
	add := func(section string, i int, name, field, format string, args ...any) {
		path := fmt.Sprintf("%s[%d]", section, i)
		if name != "" {
			path += " (" + name + ")"
		}
		errs = append(errs, ValidationError{Line: li.at(section, i, field), Path: path, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	networks := map[string]bool{}
	connectors := map[string]string{}
	for i, n := range spec.RemoteNetworks {
		if err := validObjectName(n.Name); err != nil {
			add("remote_networks", i, n.Name, "name", "%v", err)
		} else if networks[n.Name] {
			add("remote_networks", i, n.Name, "name", "duplicate remote network name %q", n.Name)
		}
		networks[n.Name] = true
		for _, c := range n.Connectors {
			if err := validObjectName(c); err != nil {
				add("remote_networks", i, n.Name, "connectors", "connector name %v", err)
			} else if other, dup := connectors[c]; dup {
				add("remote_networks", i, n.Name, "connectors", "duplicate connector name %q (already in remote network %q)", c, other)
			}
			connectors[c] = n.Name
		}
	}
	users := map[string]bool{}
	subjects := map[string]string{}
	for i, u := range spec.Users {
		if u.OIDCSubject != "" {
			switch {
			case len(u.OIDCSubject) > 255 || strings.TrimSpace(u.OIDCSubject) != u.OIDCSubject:
				add("users", i, u.Email, "oidc_subject", "must be the provider's subject exactly: at most 255 characters, no surrounding spaces")
			case subjects[u.OIDCSubject] != "":
				add("users", i, u.Email, "oidc_subject", "subject %q is already bound to %s", u.OIDCSubject, subjects[u.OIDCSubject])
			default:
				subjects[u.OIDCSubject] = u.Email
			}
		}
		if err := validEmail(u.Email); err != nil {
			add("users", i, u.Email, "email", "%v", err)
		} else if users[strings.ToLower(u.Email)] {
			add("users", i, u.Email, "email", "duplicate user %q", u.Email)
		}
		users[strings.ToLower(u.Email)] = true
		spec.Users[i].Email = strings.ToLower(u.Email)
		if u.Password != "" && u.PasswordHash != "" {
			add("users", i, u.Email, "password", "give password or password_hash, not both")
		}
		if u.PasswordHash != "" && !isPasswordHash(u.PasswordHash) {
			add("users", i, u.Email, "password_hash", "not an argon2id or bcrypt hash")
		}
		if len(u.Password) > 1024 {
			add("users", i, u.Email, "password", "longer than 1024 characters")
		}
	}
	groups := map[string]bool{}
	for i, g := range spec.Groups {
		if err := validObjectName(g.Name); err != nil {
			add("groups", i, g.Name, "name", "%v", err)
		} else if groups[g.Name] {
			add("groups", i, g.Name, "name", "duplicate group name %q", g.Name)
		}
		groups[g.Name] = true
		seen := map[string]bool{}
		for j, e := range g.Users {
			e = strings.ToLower(e)
			spec.Groups[i].Users[j] = e
			if err := validEmail(e); err != nil {
				add("groups", i, g.Name, "users", "%v", err)
			} else if seen[e] {
				add("groups", i, g.Name, "users", "user %q listed twice", e)
			}
			seen[e] = true
		}
	}
	checkGroups := func(section string, i int, name string, gs []string) {
		seen := map[string]bool{}
		for _, g := range gs {
			if !groups[g] {
				add(section, i, name, "groups", "unknown group %q (not under groups:)", g)
			} else if seen[g] {
				add(section, i, name, "groups", "group %q listed twice", g)
			}
			seen[g] = true
		}
	}
	resources := map[string]bool{}
	for i, r := range spec.Resources {
		if err := validObjectName(r.Name); err != nil {
			add("resources", i, r.Name, "name", "%v", err)
		} else if resources[r.Name] {
			add("resources", i, r.Name, "name", "duplicate resource name %q", r.Name)
		}
		resources[r.Name] = true
		if a, err := policy.ParseAddress(r.Address); err != nil {
			add("resources", i, r.Name, "address", "%v", err)
		} else {
			spec.Resources[i].Address = a.String()
		}
		if r.Alias != "" {
			if a, err := policy.ParseAddress(r.Alias); err != nil || a.Kind != policy.KindName {
				add("resources", i, r.Name, "alias", "%q is not a DNS name", r.Alias)
			} else {
				spec.Resources[i].Alias = a.Name
			}
		}
		if r.Network == "" {
			add("resources", i, r.Name, "network", "is required")
		} else if !networks[r.Network] {
			add("resources", i, r.Name, "network", "unknown remote network %q (not under remote_networks:)", r.Network)
		}
		seenPorts := map[string]bool{}
		for j, p := range r.Ports {
			pr, err := policy.ParsePortRule(p)
			if err != nil {
				add("resources", i, r.Name, "ports", "%v", err)
				continue
			}
			if seenPorts[pr.String()] {
				add("resources", i, r.Name, "ports", "port %q listed twice", p)
			}
			seenPorts[pr.String()] = true
			spec.Resources[i].Ports[j] = pr.String()
		}
		checkGroups("resources", i, r.Name, r.Groups)
	}
	sas := map[string]bool{}
	for i, s := range spec.ServiceAccounts {
		if err := validObjectName(s.Name); err != nil {
			add("service_accounts", i, s.Name, "name", "%v", err)
		} else if sas[s.Name] {
			add("service_accounts", i, s.Name, "name", "duplicate service account name %q", s.Name)
		}
		sas[s.Name] = true
		checkGroups("service_accounts", i, s.Name, s.Groups)
	}
	addTop := func(field, format string, args ...any) {
		line := 0
		if li != nil {
			line = li[field]
		}
		errs = append(errs, ValidationError{Line: line, Path: field, Msg: fmt.Sprintf(format, args...)})
	}
	normalizeAccess(spec, groups, add, addTop)
	normalizeClient(spec, addTop)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, errs)
	}
	return nil
}

// specFromTx reads the declarative part of the store back as a Spec (users
// carry their stored hash).
func specFromTx(tx store.Tx) (*Spec, error) {
	spec := &Spec{}
	var nets []Network
	var cons []Connector
	if err := listInto(tx, KindNetwork, &nets); err != nil {
		return nil, err
	}
	if err := listInto(tx, KindConnector, &cons); err != nil {
		return nil, err
	}
	byNet := map[string][]string{}
	for _, c := range cons {
		byNet[c.Network] = append(byNet[c.Network], c.Name)
	}
	for _, n := range nets {
		sort.Strings(byNet[n.Name])
		spec.RemoteNetworks = append(spec.RemoteNetworks, adminapi.NetworkSpec{Name: n.Name, Connectors: strs(byNet[n.Name])})
	}
	var groups []Group
	if err := listInto(tx, KindGroup, &groups); err != nil {
		return nil, err
	}
	for _, g := range groups {
		spec.Groups = append(spec.Groups, adminapi.GroupSpec{Name: g.Name, Users: strs(g.Users)})
	}
	var users []User
	if err := listInto(tx, KindUser, &users); err != nil {
		return nil, err
	}
	for _, u := range users {
		if u.Source == "oidc" {
			continue
		}
		spec.Users = append(spec.Users, adminapi.UserSpec{Email: u.Email, PasswordHash: u.PasswordHash, Disabled: u.Disabled, OIDCSubject: u.IdPSubject})
	}
	var sas []ServiceAccount
	if err := listInto(tx, KindServiceAccount, &sas); err != nil {
		return nil, err
	}
	for _, s := range sas {
		spec.ServiceAccounts = append(spec.ServiceAccounts, adminapi.ServiceAccountSpec{Name: s.Name, Groups: strs(s.Groups)})
	}
	var res []Resource
	if err := listInto(tx, KindResource, &res); err != nil {
		return nil, err
	}
	for _, r := range res {
		spec.Resources = append(spec.Resources, adminapi.ResourceSpec{Name: r.Name, Address: r.Address, Alias: r.Alias, Network: r.Network, Ports: strs(r.Ports), Groups: strs(r.Groups), Require: r.Require})
	}
	var profiles []PostureProfile
	if err := listInto(tx, KindPostureProfile, &profiles); err != nil {
		return nil, err
	}
	for _, p := range profiles {
		spec.PostureProfiles = append(spec.PostureProfiles, p.PostureProfileSpec)
	}
	var settings []AccessSettings
	if err := listInto(tx, KindAccessSettings, &settings); err != nil {
		return nil, err
	}
	for _, st := range settings {
		spec.AutoLock = st.AutoLock
	}
	var client []ClientSettings
	if err := listInto(tx, KindClientSettings, &client); err != nil {
		return nil, err
	}
	for _, c := range client {
		r := c.Ranges
		spec.ClientRanges = &r
	}
	return spec, nil
}

func listInto[T any](tx store.Tx, kind string, out *[]T) error {
	objs, err := tx.List(kind)
	if err != nil {
		return err
	}
	for _, o := range objs {
		var v T
		if err := json.Unmarshal(o.Data, &v); err != nil {
			return fmt.Errorf("decode %s %s: %w", kind, o.ID, err)
		}
		*out = append(*out, v)
	}
	return nil
}
