package console

import (
	"encoding/json"
	"time"

	"postern.dev/postern/controlapi"
)

// The admin API's JSON as the console reads and writes it. The objects the
// console lists are read-only here and carry the fields the pages show; the
// configuration (Spec) is read, edited and sent back, so its types carry
// every field of the controller's, with the same JSON names (the
// controller's tests compare them), and keep the parts the forms do not
// edit as raw JSON.

// Spec is the declarative configuration (GET /api/v1/spec).
type Spec struct {
	RemoteNetworks  []NetworkSpec        `json:"remote_networks"`
	Groups          []GroupSpec          `json:"groups"`
	Users           []UserSpec           `json:"users"`
	Resources       []ResourceSpec       `json:"resources"`
	ServiceAccounts []ServiceAccountSpec `json:"service_accounts"`
	PostureProfiles []PostureProfileSpec `json:"posture_profiles,omitempty"`
	AutoLock        string               `json:"auto_lock,omitempty"`
	ClientRanges    json.RawMessage      `json:"client_ranges,omitempty"`
}

// NetworkSpec is a remote network and the names of its connectors.
type NetworkSpec struct {
	Name       string   `json:"name"`
	Connectors []string `json:"connectors"`
}

// GroupSpec is a group and its users (e-mail addresses).
type GroupSpec struct {
	Name  string   `json:"name"`
	Users []string `json:"users"`
}

// UserSpec is a built-in account.
type UserSpec struct {
	Email        string `json:"email"`
	Password     string `json:"password,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
	Disabled     bool   `json:"disabled,omitempty"`
	OIDCSubject  string `json:"oidc_subject,omitempty"`
}

// ResourceSpec is a resource; its access requirements are not edited here.
type ResourceSpec struct {
	Name    string          `json:"name"`
	Address string          `json:"address"`
	Alias   string          `json:"alias,omitempty"`
	Network string          `json:"network"`
	Ports   []string        `json:"ports"`
	Groups  []string        `json:"groups"`
	Require json.RawMessage `json:"require,omitempty"`
}

// ServiceAccountSpec is a service account and its groups.
type ServiceAccountSpec struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
}

// PostureProfileSpec is what a device must report to satisfy a profile.
type PostureProfileSpec struct {
	Name           string            `json:"name"`
	OSMin          map[string]string `json:"os_min,omitempty"`
	DiskEncryption bool              `json:"disk_encryption,omitempty"`
	Firewall       bool              `json:"firewall,omitempty"`
	ClientMin      string            `json:"client_min,omitempty"`
}

// ConnectorView is a connector with its health.
type ConnectorView struct {
	ID            string                   `json:"id"`
	Name          string                   `json:"name"`
	Network       string                   `json:"network"`
	EnrolledAt    time.Time                `json:"enrolled_at,omitzero"`
	Hostname      string                   `json:"hostname,omitempty"`
	Version       string                   `json:"version,omitempty"`
	Addrs         []string                 `json:"addrs,omitempty"`
	Online        bool                     `json:"online"`
	Enrolled      bool                     `json:"enrolled"`
	Load          controlapi.ConnectorLoad `json:"load"`
	LastHeartbeat *time.Time               `json:"last_heartbeat,omitempty"`
}

// RelayView is a relay with its health.
type RelayView struct {
	ID            string             `json:"id"`
	Name          string             `json:"name"`
	EnrolledAt    time.Time          `json:"enrolled_at,omitzero"`
	PublicIP      string             `json:"public_ip,omitempty"`
	UDPAddr       string             `json:"udp_addr,omitempty"`
	TLSAddr       string             `json:"tls_addr,omitempty"`
	Version       string             `json:"version,omitempty"`
	Online        bool               `json:"online"`
	Enrolled      bool               `json:"enrolled"`
	LastHeartbeat *time.Time         `json:"last_heartbeat,omitempty"`
	Stats         map[string]float64 `json:"stats,omitempty"`
}

// UserView is a user.
type UserView struct {
	ID          string `json:"id"`
	Email       string `json:"email"`
	Source      string `json:"source,omitempty"`
	Disabled    bool   `json:"disabled,omitempty"`
	HasPassword bool   `json:"has_password"`
	OIDCSubject string `json:"oidc_subject,omitempty"`
	OIDCIssuer  string `json:"oidc_issuer,omitempty"`
}

// ServiceAccountView is a service account and its keys.
type ServiceAccountView struct {
	ID     string           `json:"id"`
	Name   string           `json:"name"`
	Groups []string         `json:"groups"`
	Keys   []ServiceKeyView `json:"keys"`
}

// ServiceKeyView is a service account's key, without its secret.
type ServiceKeyView struct {
	KeyID     string    `json:"key_id"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// SessionView is a device's session.
type SessionView struct {
	ID            string    `json:"id"`
	DeviceID      string    `json:"device_id"`
	PrincipalID   string    `json:"principal_id"`
	PrincipalKind string    `json:"principal_kind"`
	Method        string    `json:"method"`
	Created       time.Time `json:"created"`
	ExpiresAt     time.Time `json:"expires_at"`
	Revoked       bool      `json:"revoked,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	MFAAt         time.Time `json:"mfa_at,omitzero"`
	MFAMethod     string    `json:"mfa_method,omitempty"`
	RevokeReason  string    `json:"revoke_reason,omitempty"`
	Active        bool      `json:"active"`
}

// Device is a client device.
type Device struct {
	ID            string    `json:"id"`
	PrincipalID   string    `json:"principal_id"`
	PrincipalKind string    `json:"principal_kind"`
	PublicKey     string    `json:"public_key"`
	Thumbprint    string    `json:"jkt"`
	Name          string    `json:"name,omitempty"`
	OS            string    `json:"os,omitempty"`
	Created       time.Time `json:"created"`
	Revoked       bool      `json:"revoked,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
}

// Store kinds, as the admin API and the apply record name them.
const (
	kindNetwork        = "network"
	kindRelay          = "relay"
	kindResource       = "resource"
	kindGroup          = "group"
	kindUser           = "user"
	kindServiceAccount = "service_account"
	kindPostureProfile = "posture_profile"
	kindAdminSession   = "admin_session"
)
