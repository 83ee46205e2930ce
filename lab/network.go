package lab

import (
	"fmt"
	"slices"

	"gopkg.in/yaml.v3"
)

// NetworkSpec is network.yaml as `postern-controller apply` reads it
// (DESIGN.md, "User-facing contract").
type NetworkSpec struct {
	RemoteNetworks  []RemoteNetworkSpec  `yaml:"remote_networks"`
	Groups          []GroupSpec          `yaml:"groups"`
	Users           []UserSpec           `yaml:"users"`
	Resources       []ResourceSpec       `yaml:"resources"`
	ServiceAccounts []ServiceAccountSpec `yaml:"service_accounts,omitempty"`
}

// RemoteNetworkSpec is one remote network and its connectors.
type RemoteNetworkSpec struct {
	Name       string   `yaml:"name"`
	Connectors []string `yaml:"connectors"`
}

// GroupSpec is a group and its members.
type GroupSpec struct {
	Name  string   `yaml:"name"`
	Users []string `yaml:"users"`
}

// UserSpec is a built-in account.
type UserSpec struct {
	Email    string `yaml:"email"`
	Password string `yaml:"password"`
}

// ResourceSpec is one resource.
type ResourceSpec struct {
	Name    string   `yaml:"name"`
	Address string   `yaml:"address"`
	Network string   `yaml:"network"`
	Ports   []string `yaml:"ports,omitempty"`
	Groups  []string `yaml:"groups"`
	// Require, when set, adds access requirements (docs/access.md).
	Require *RequireSpec `yaml:"require,omitempty"`
}

// RequireSpec is a resource's require: block; the lab uses approval.
type RequireSpec struct {
	MFA      string        `yaml:"mfa,omitempty"`
	Approval *ApprovalSpec `yaml:"approval,omitempty"`
}

// ApprovalSpec: access only through an approved, time-boxed request.
type ApprovalSpec struct {
	Approvers []string `yaml:"approvers"`
	Max       string   `yaml:"max"`
}

// ServiceAccountSpec is a service account.
type ServiceAccountSpec struct {
	Name   string   `yaml:"name"`
	Groups []string `yaml:"groups"`
}

// DemoNetwork is the lab's network.yaml: alice (engineering) may use every
// resource; bob (sales) only the web wildcard on tcp/80.
func DemoNetwork(alicePassword, bobPassword string) NetworkSpec {
	return NetworkSpec{
		RemoteNetworks: []RemoteNetworkSpec{{Name: "corp", Connectors: []string{NodeConnectorA, NodeConnectorB}}},
		Groups: []GroupSpec{
			{Name: "engineering", Users: []string{Alice}},
			{Name: "sales", Users: []string{Bob}},
		},
		Users: []UserSpec{{Email: Alice, Password: alicePassword}, {Email: Bob, Password: bobPassword}},
		Resources: append([]ResourceSpec{
			{Name: "db", Address: DBName, Network: "corp", Ports: []string{"tcp/22", "tcp/5432", "icmp"}, Groups: []string{"engineering"}},
			{Name: "web", Address: "*." + CorpZone, Network: "corp", Ports: []string{"tcp/80"}, Groups: []string{"engineering", "sales"}},
			{Name: "lab-subnet", Address: SubnetCIDR, Network: "corp", Ports: []string{"tcp/80", "icmp"}, Groups: []string{"engineering"}},
			{Name: "corp-dns", Address: CorpDNSIP, Network: "corp", Ports: []string{"udp/53", "tcp/53"}, Groups: []string{"engineering"}},
		}, IPv6Resources()...),
	}
}

// Clone returns a deep copy, for tests that change a copy and apply it.
func (n NetworkSpec) Clone() NetworkSpec {
	c := n
	c.RemoteNetworks = slices.Clone(n.RemoteNetworks)
	for i := range c.RemoteNetworks {
		c.RemoteNetworks[i].Connectors = slices.Clone(c.RemoteNetworks[i].Connectors)
	}
	c.Groups = slices.Clone(n.Groups)
	for i := range c.Groups {
		c.Groups[i].Users = slices.Clone(c.Groups[i].Users)
	}
	c.Users = slices.Clone(n.Users)
	c.Resources = slices.Clone(n.Resources)
	for i := range c.Resources {
		c.Resources[i].Ports = slices.Clone(c.Resources[i].Ports)
		c.Resources[i].Groups = slices.Clone(c.Resources[i].Groups)
		if r := c.Resources[i].Require; r != nil {
			rc := *r
			if r.Approval != nil {
				a := *r.Approval
				a.Approvers = slices.Clone(a.Approvers)
				rc.Approval = &a
			}
			c.Resources[i].Require = &rc
		}
	}
	c.ServiceAccounts = slices.Clone(n.ServiceAccounts)
	return c
}

// RemoveMember takes user out of group; it reports whether it was there.
func (n *NetworkSpec) RemoveMember(group, user string) bool {
	for i := range n.Groups {
		if n.Groups[i].Name != group {
			continue
		}
		before := len(n.Groups[i].Users)
		n.Groups[i].Users = slices.DeleteFunc(n.Groups[i].Users, func(u string) bool { return u == user })
		return len(n.Groups[i].Users) != before
	}
	return false
}

// YAML renders the spec.
func (n NetworkSpec) YAML() ([]byte, error) {
	b, err := yaml.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("render network.yaml: %w", err)
	}
	return b, nil
}
