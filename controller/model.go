package controller

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/store"
)

// Object kinds in the store. Those the admin API serves are named by package
// adminapi, and the API uses the plural path segment of each (objectRoutes
// in controller/api/admin_objects.go): the objects network.yaml declares,
const (
	KindNetwork        = adminapi.KindNetwork
	KindResource       = adminapi.KindResource
	KindGroup          = adminapi.KindGroup
	KindUser           = adminapi.KindUser
	KindServiceAccount = adminapi.KindServiceAccount
)

// the enrolled components, and the clients' devices and sessions.
const (
	KindConnector = adminapi.KindConnector
	KindRelay     = adminapi.KindRelay
	KindDevice    = adminapi.KindDevice
	KindSession   = adminapi.KindSession
)

// KindEnrollment is the kind of enrollment tokens.
const KindEnrollment = "enrollment"

// Principal kinds.
const (
	PrincipalUser           = "user"
	PrincipalServiceAccount = "service_account"
)

// Network is a remote network: a private network served by its connectors.
type Network struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// The records the admin API lists (package adminapi).
type (
	Connector = adminapi.Connector
	Relay     = adminapi.Relay
	Device    = adminapi.Device
	Session   = adminapi.Session
)

// Resource is a private host, name, wildcard or range, and who may reach it.
type Resource struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Alias   string   `json:"alias,omitempty"`
	Address string   `json:"address"`
	Network string   `json:"network"`
	Ports   []string `json:"ports"`
	Groups  []string `json:"groups"`
	Require *Require `json:"require,omitempty"`
}

// Group is a set of users (by email); service accounts name their groups.
type Group struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Users []string `json:"users"`
}

// User is a person. Built-in accounts have a password hash; users created at
// their first single sign-on have Source "oidc" and no password.
type User struct {
	ID           string `json:"id"`
	Email        string `json:"email"`
	PasswordHash string `json:"password_hash,omitempty"`
	Source       string `json:"source,omitempty"` // "builtin" (default) or "oidc"
	Disabled     bool   `json:"disabled,omitempty"`
	// External identity (Source "oidc"): issuer, subject and the groups the
	// identity provider reported; they join Postern groups of the same name.
	IdPIssuer  string   `json:"idp_issuer,omitempty"`
	IdPSubject string   `json:"idp_subject,omitempty"`
	IdPGroups  []string `json:"idp_groups,omitempty"`
}

// ServiceAccount is a non-human principal that signs in with a key file.
type ServiceAccount struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Groups []string        `json:"groups"`
	Keys   []ServiceKeyRec `json:"keys,omitempty"`
}

// ServiceKeyRec is a stored service key: only the SHA-256 of its (random,
// 256-bit) secret is kept.
type ServiceKeyRec struct {
	KeyID      string    `json:"key_id"`
	SecretHash string    `json:"secret_sha256"`
	Created    time.Time `json:"created"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
}

// Enrollment is a single-use enrollment token (only its secret's hash).
type Enrollment struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"` // connector or relay
	Name       string    `json:"name"`
	SecretHash string    `json:"secret_sha256"`
	ExpiresAt  time.Time `json:"expires_at"`
	Used       bool      `json:"used,omitempty"`
	UsedAt     time.Time `json:"used_at,omitzero"`
}

func newID(prefix string) string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}

func idPrefix(kind string) string {
	switch kind {
	case KindNetwork:
		return "net"
	case KindConnector:
		return "con"
	case KindRelay:
		return "rly"
	case KindResource:
		return "res"
	case KindGroup:
		return "grp"
	case KindUser:
		return "usr"
	case KindServiceAccount:
		return "sa"
	case KindDevice:
		return "dev"
	case KindSession:
		return "ses"
	case KindEnrollment:
		return "enr"
	}
	return "obj"
}

// toObject encodes a record.
func toObject(kind, id, name string, v any) (store.Object, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return store.Object{}, fmt.Errorf("encode %s %s: %w", kind, name, err)
	}
	return store.Object{Kind: kind, ID: id, Name: name, Data: b}, nil
}

// Model is an immutable in-memory view of the store at one revision. Policy
// pushes and token issuance read it; writes go through the store and replace
// the model.
type Model struct {
	Rev int64

	// revoked caches revokedDevices for this model (every connector and
	// relay stream asks for the same list after each change).
	revoked *revokedCache

	Networks        map[string]*Network // by name
	Connectors      map[string]*Connector
	ConnectorByName map[string]*Connector
	Relays          map[string]*Relay
	Resources       []*Resource // sorted by name
	Groups          map[string]*Group
	Users           map[string]*User // by id
	UserByEmail     map[string]*User
	ServiceAccounts map[string]*ServiceAccount // by id
	Devices         map[string]*Device
	DeviceByKey     map[string]*Device  // by deviceKeyName (principal id / key thumbprint)
	Sessions        map[string]*Session // active sessions by token hash
	SessionByID     map[string]*Session
	Enrollments     int

	// Derived: principal id -> group names; group name -> principal ids.
	principalGroups map[string][]string
	groupMembers    map[string][]string
	// reach caches, per principal, the networks holding a resource it may
	// use. It depends only on resources and memberships, so incremental
	// updates (which never touch those) share it.
	reach *sync.Map

	// Access governance (access_model.go).
	access accessModel
	// clientSettings: the default synthetic ranges (client_settings.go).
	clientSettings *ClientSettings
}

func buildModel(rev int64, objs []store.Object, now time.Time) (*Model, error) {
	m := &Model{
		revoked:         &revokedCache{},
		Rev:             rev,
		Networks:        map[string]*Network{},
		Connectors:      map[string]*Connector{},
		ConnectorByName: map[string]*Connector{},
		Relays:          map[string]*Relay{},
		Groups:          map[string]*Group{},
		Users:           map[string]*User{},
		UserByEmail:     map[string]*User{},
		ServiceAccounts: map[string]*ServiceAccount{},
		Devices:         map[string]*Device{},
		DeviceByKey:     map[string]*Device{},
		Sessions:        map[string]*Session{},
		SessionByID:     map[string]*Session{},
		principalGroups: map[string][]string{},
		groupMembers:    map[string][]string{},
		reach:           &sync.Map{},
	}
	for _, o := range objs {
		var err error
		switch o.Kind {
		case KindNetwork:
			v := new(Network)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.Networks[v.Name] = v
			}
		case KindConnector:
			v := new(Connector)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.Connectors[v.ID] = v
				m.ConnectorByName[v.Name] = v
			}
		case KindRelay:
			v := new(Relay)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.Relays[v.ID] = v
			}
		case KindResource:
			v := new(Resource)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.Resources = append(m.Resources, v)
			}
		case KindGroup:
			v := new(Group)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.Groups[v.Name] = v
			}
		case KindUser:
			v := new(User)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.Users[v.ID] = v
				m.UserByEmail[v.Email] = v
			}
		case KindServiceAccount:
			v := new(ServiceAccount)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.ServiceAccounts[v.ID] = v
			}
		case KindDevice:
			v := new(Device)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.Devices[v.ID] = v
				m.DeviceByKey[o.Name] = v
			}
		case KindSession:
			v := new(Session)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.SessionByID[v.ID] = v
				if !v.Revoked && now.Before(v.ExpiresAt) {
					m.Sessions[v.TokenHash] = v
				}
			}
		case KindEnrollment:
			m.Enrollments++
		case KindClientSettings:
			v := new(ClientSettings)
			if err = json.Unmarshal(o.Data, v); err == nil {
				m.clientSettings = v
			}
		default:
			err = m.access.add(o)
		}
		if err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", o.Kind, o.ID, err)
		}
	}
	sort.Slice(m.Resources, func(i, j int) bool { return m.Resources[i].Name < m.Resources[j].Name })
	for _, g := range m.Groups {
		for _, email := range g.Users {
			if u, ok := m.UserByEmail[email]; ok && !u.Disabled {
				m.principalGroups[u.ID] = append(m.principalGroups[u.ID], g.Name)
				m.groupMembers[g.Name] = append(m.groupMembers[g.Name], u.ID)
			}
		}
	}
	for _, u := range m.Users {
		if u.Disabled {
			continue
		}
		for _, g := range u.IdPGroups {
			if _, ok := m.Groups[g]; ok && !slices.Contains(m.principalGroups[u.ID], g) {
				m.principalGroups[u.ID] = append(m.principalGroups[u.ID], g)
				m.groupMembers[g] = append(m.groupMembers[g], u.ID)
			}
		}
	}
	for _, sa := range m.ServiceAccounts {
		for _, g := range sa.Groups {
			m.principalGroups[sa.ID] = append(m.principalGroups[sa.ID], g)
			m.groupMembers[g] = append(m.groupMembers[g], sa.ID)
		}
	}
	for k := range m.principalGroups {
		sort.Strings(m.principalGroups[k])
	}
	for k := range m.groupMembers {
		sort.Strings(m.groupMembers[k])
	}
	return m, nil
}

// principal returns the API view of a principal, or false if it is gone.
func (m *Model) principal(id string) (controlapi.Principal, bool) {
	if u, ok := m.Users[id]; ok && !u.Disabled {
		return controlapi.Principal{ID: u.ID, Kind: PrincipalUser, Name: u.Email, Groups: nonNil(m.principalGroups[id])}, true
	}
	if sa, ok := m.ServiceAccounts[id]; ok {
		return controlapi.Principal{ID: sa.ID, Kind: PrincipalServiceAccount, Name: sa.Name, Groups: nonNil(m.principalGroups[id])}, true
	}
	return controlapi.Principal{}, false
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// mayReach reports whether principal id may use resource r.
func (m *Model) mayReach(pid string, r *Resource) bool {
	for _, pg := range m.principalGroups[pid] {
		for _, rg := range r.Groups {
			if pg == rg {
				return true
			}
		}
	}
	return false
}

func policyResource(r *Resource) controlapi.PolicyResource {
	return controlapi.PolicyResource{ID: r.ID, Name: r.Name, Alias: r.Alias, Address: r.Address, Network: r.Network, Ports: nonNil(r.Ports), Require: requirements(r.Require)}
}

// revokedCache holds one model's revokedDevices list, recomputed when it is
// older than revokedCacheAge (sessions expire as time passes).
type revokedCache struct {
	mu   sync.Mutex
	at   time.Time
	list []string
}

const revokedCacheAge = 30 * time.Second

// revokedDevices lists devices whose access ended recently: revoked devices
// and devices whose sessions were all revoked. It is computed once per model
// (and every revokedCacheAge): with a thousand connector streams woken by a
// change, computing it per stream cost O(connectors x devices).
func (m *Model) revokedDevices(now time.Time) []string {
	c := m.revoked
	if c == nil {
		return m.computeRevokedDevices(now)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.list == nil || now.Sub(c.at) > revokedCacheAge || now.Before(c.at) {
		c.list, c.at = m.computeRevokedDevices(now), now
	}
	return slices.Clone(c.list)
}

func (m *Model) computeRevokedDevices(now time.Time) []string {
	const window = 7 * 24 * time.Hour
	active := map[string]bool{}
	for _, s := range m.Sessions {
		if now.Before(s.ExpiresAt) {
			active[s.DeviceID] = true
		}
	}
	set := map[string]bool{}
	for _, d := range m.Devices {
		if d.Revoked && now.Sub(d.RevokedAt) < window {
			set[d.ID] = true
		}
	}
	for _, s := range m.SessionByID {
		if s.Revoked && !active[s.DeviceID] && now.Sub(s.RevokedAt) < window {
			set[s.DeviceID] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (m *Model) relayInfos() []controlapi.RelayInfo {
	out := []controlapi.RelayInfo{}
	for _, r := range m.Relays {
		if r.UDPAddr == "" && r.TLSAddr == "" {
			continue
		}
		out = append(out, controlapi.RelayInfo{ID: r.ID, Name: r.Name, UDPAddr: r.UDPAddr, TLSAddr: r.TLSAddr, Online: r.Online, TLSCertSHA256: r.TLSCertSHA256})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// connectorPolicy computes the snapshot for connector id.
func (m *Model) connectorPolicy(id, issuer string, jwks json.RawMessage, now time.Time) (controlapi.ConnectorPolicy, bool) {
	c, ok := m.Connectors[id]
	if !ok {
		return controlapi.ConnectorPolicy{}, false
	}
	p := controlapi.ConnectorPolicy{
		Revision: m.Rev, ConnectorID: c.ID, Network: c.Network, Issuer: issuer, JWKS: jwks,
		Resources: []controlapi.ConnectorResource{}, Relays: m.relayInfos(), RevokedDevices: m.revokedDevices(now),
	}
	for _, r := range m.Resources {
		if r.Network != c.Network {
			continue
		}
		principals := []string{}
		seen := map[string]bool{}
		for _, g := range r.Groups {
			for _, pid := range m.groupMembers[g] {
				if !seen[pid] {
					seen[pid] = true
					principals = append(principals, pid)
				}
			}
		}
		sort.Strings(principals)
		cr := controlapi.ConnectorResource{PolicyResource: policyResource(r), Principals: principals, Groups: nonNil(r.Groups)}
		m.connectorResourceAccess(&cr, r, principals, now)
		p.Resources = append(p.Resources, cr)
	}
	p.Access = m.connectorAccess(now)
	return p, true
}

func (m *Model) connectorInfo(c *Connector, load controlapi.ConnectorLoad) controlapi.ConnectorInfo {
	return controlapi.ConnectorInfo{ID: c.ID, Name: c.Name, Network: c.Network, Online: c.Online,
		CertSHA256: nonNil(c.CertSHA256), Addrs: nonNil(c.Addrs), Load: load}
}

// clientPolicy computes the snapshot for principal pid.
func (m *Model) clientPolicy(pid, issuer string, jwks json.RawMessage, load func(string) controlapi.ConnectorLoad) (controlapi.ClientPolicy, bool) {
	pr, ok := m.principal(pid)
	if !ok {
		return controlapi.ClientPolicy{}, false
	}
	p := controlapi.ClientPolicy{Revision: m.Rev, Principal: pr, Issuer: issuer, JWKS: jwks,
		Resources: []controlapi.PolicyResource{}, Connectors: []controlapi.ConnectorInfo{}, Relays: m.relayInfos()}
	nets := map[string]bool{}
	for _, r := range m.Resources {
		if m.mayReach(pid, r) {
			p.Resources = append(p.Resources, policyResource(r))
			nets[r.Network] = true
		}
	}
	for _, c := range m.Connectors {
		if nets[c.Network] {
			p.Connectors = append(p.Connectors, m.connectorInfo(c, load(c.ID)))
		}
	}
	sort.Slice(p.Connectors, func(i, j int) bool { return p.Connectors[i].Name < p.Connectors[j].Name })
	return p, true
}

// mayUseConnector reports whether pid may reach at least one resource that
// connector c serves.
func (m *Model) mayUseConnector(pid string, c *Connector) bool {
	if v, ok := m.reach.Load(pid); ok {
		return v.(map[string]bool)[c.Network]
	}
	nets := map[string]bool{}
	for _, r := range m.Resources {
		if m.mayReach(pid, r) {
			nets[r.Network] = true
		}
	}
	m.reach.Store(pid, nets)
	return nets[c.Network]
}
