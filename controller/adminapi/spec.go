// Package adminapi is the admin API's JSON, as package controlapi is the
// control API's: the declarative configuration (Spec, the body of apply and
// the form of network.yaml, so its types carry YAML tags too), the object
// kinds the API and the apply record name, the stored records the API lists
// and the views it shows of them. The controller serves these types and the
// console reads and edits them; neither keeps a copy.
//
// It holds the types, the kinds' names and how one object's create or
// update changes a Spec (Upsert); validation, storage and what the values
// mean stay in package controller.
package adminapi

// Spec is the declarative form of a deployment: network.yaml, and the body of
// the admin API's apply endpoint (GET /api/v1/spec answers it).
type Spec struct {
	RemoteNetworks  []NetworkSpec        `yaml:"remote_networks" json:"remote_networks"`
	Groups          []GroupSpec          `yaml:"groups" json:"groups"`
	Users           []UserSpec           `yaml:"users" json:"users"`
	Resources       []ResourceSpec       `yaml:"resources" json:"resources"`
	ServiceAccounts []ServiceAccountSpec `yaml:"service_accounts" json:"service_accounts"`
	// Access governance (docs/access.md).
	PostureProfiles []PostureProfileSpec `yaml:"posture_profiles,omitempty" json:"posture_profiles,omitempty"`
	AutoLock        string               `yaml:"auto_lock,omitempty" json:"auto_lock,omitempty"`
	// ClientRanges are the deployment's default synthetic ranges.
	ClientRanges *ClientRangesSpec `yaml:"client_ranges,omitempty" json:"client_ranges,omitempty"`
}

// ClientRangesSpec declares the default synthetic ranges (CIDR) clients use
// in TUN mode; an empty field keeps the clients' built-in range.
type ClientRangesSpec struct {
	IPv4 string `yaml:"ipv4,omitempty" json:"ipv4,omitempty"`
	IPv6 string `yaml:"ipv6,omitempty" json:"ipv6,omitempty"`
}

// NetworkSpec declares a remote network and the names of its connectors.
type NetworkSpec struct {
	Name       string   `yaml:"name" json:"name"`
	Connectors []string `yaml:"connectors" json:"connectors"`
}

// GroupSpec declares a group and its users (emails).
type GroupSpec struct {
	Name  string   `yaml:"name" json:"name"`
	Users []string `yaml:"users" json:"users"`
}

// UserSpec declares a built-in account. Password is hashed (argon2id) before
// it is stored; PasswordHash takes an existing argon2id or bcrypt hash.
type UserSpec struct {
	Email        string `yaml:"email" json:"email"`
	Password     string `yaml:"password,omitempty" json:"password,omitempty"`
	PasswordHash string `yaml:"password_hash,omitempty" json:"password_hash,omitempty"`
	Disabled     bool   `yaml:"disabled,omitempty" json:"disabled,omitempty"`
	// OIDCSubject binds the account to the identity provider's subject
	// (the "sub" claim): single sign-on with that subject signs in as this
	// account whatever e-mail the provider reports, and no other subject can
	// take the account over by e-mail (docs/sso.md). Empty keeps the binding
	// a verified sign-in made, if any.
	OIDCSubject string `yaml:"oidc_subject,omitempty" json:"oidc_subject,omitempty"`
}

// ResourceSpec declares a resource.
type ResourceSpec struct {
	Name    string   `yaml:"name" json:"name"`
	Address string   `yaml:"address" json:"address"`
	Alias   string   `yaml:"alias,omitempty" json:"alias,omitempty"`
	Network string   `yaml:"network" json:"network"`
	Ports   []string `yaml:"ports" json:"ports"`
	Groups  []string `yaml:"groups" json:"groups"`
	// Require: access conditions beyond group membership (docs/access.md).
	Require *Require `yaml:"require,omitempty" json:"require,omitempty"`
}

// Require is a resource's access conditions, as written in network.yaml and
// stored with the resource.
type Require struct {
	MFA      string        `yaml:"mfa,omitempty" json:"mfa,omitempty"`         // a second factor within this window (e.g. 12h)
	Posture  []string      `yaml:"posture,omitempty" json:"posture,omitempty"` // posture profiles the device must satisfy
	Approval *ApprovalSpec `yaml:"approval,omitempty" json:"approval,omitempty"`
}

// ApprovalSpec makes access go through approved, time-boxed requests.
type ApprovalSpec struct {
	Approvers []string `yaml:"approvers" json:"approvers"` // groups whose members may approve
	Max       string   `yaml:"max" json:"max"`             // longest grant (e.g. 8h)
}

// ServiceAccountSpec declares a service account and its groups.
type ServiceAccountSpec struct {
	Name   string   `yaml:"name" json:"name"`
	Groups []string `yaml:"groups" json:"groups"`
}

// PostureProfileSpec declares a posture profile: what a device must report
// to satisfy it.
type PostureProfileSpec struct {
	Name           string            `yaml:"name" json:"name"`
	OSMin          map[string]string `yaml:"os_min,omitempty" json:"os_min,omitempty"` // GOOS -> minimum version; an OS not listed does not satisfy a profile that lists any
	DiskEncryption bool              `yaml:"disk_encryption,omitempty" json:"disk_encryption,omitempty"`
	Firewall       bool              `yaml:"firewall,omitempty" json:"firewall,omitempty"`
	ClientMin      string            `yaml:"client_min,omitempty" json:"client_min,omitempty"`
}

// Upsert replaces the element of list named old (name gives an element's
// name), or appends v when old is empty or names none: how the admin API's
// create (POST) and update (PUT) of one declared object change the Spec.
func Upsert[T any](list []T, old string, v T, name func(T) string) []T {
	if old != "" {
		for i := range list {
			if name(list[i]) == old {
				list[i] = v
				return list
			}
		}
	}
	return append(list, v)
}
