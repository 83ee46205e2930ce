package adminapi

import (
	"encoding/json"
	"time"

	"postern.dev/postern/controlapi"
)

// The records below are stored as they are and are what the admin API
// lists, a device as it is, the others inside their views (which add live
// state and hide what the API never shows).

// Connector is a connector's record: declared under a network, enrolled with
// its own key, and reporting its certificate digests by heartbeat.
type Connector struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Network      string    `json:"network"`
	PublicKeyPEM string    `json:"public_key_pem,omitempty"`
	EnrolledAt   time.Time `json:"enrolled_at,omitzero"`
	Hostname     string    `json:"hostname,omitempty"`
	Version      string    `json:"version,omitempty"`
	CertSHA256   []string  `json:"cert_sha256,omitempty"`
	Addrs        []string  `json:"addrs,omitempty"`
	Online       bool      `json:"online"`
}

// Relay is a relay's record.
type Relay struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	PublicKeyPEM string    `json:"public_key_pem,omitempty"`
	EnrolledAt   time.Time `json:"enrolled_at,omitzero"`
	PublicIP     string    `json:"public_ip,omitempty"`
	UDPAddr      string    `json:"udp_addr,omitempty"`
	TLSAddr      string    `json:"tls_addr,omitempty"`
	Version      string    `json:"version,omitempty"`
	// TLSCertSHA256 is the digest of the relay's TLS listener certificate.
	TLSCertSHA256 string `json:"tls_cert_sha256,omitempty"`
	Online        bool   `json:"online"`
}

// Device is a client device, identified by its Ed25519 key.
type Device struct {
	ID            string    `json:"id"`
	PrincipalID   string    `json:"principal_id"`
	PrincipalKind string    `json:"principal_kind"`
	PublicKey     string    `json:"public_key"` // base64 std of the 32 raw bytes
	Thumbprint    string    `json:"jkt"`
	Name          string    `json:"name,omitempty"`
	OS            string    `json:"os,omitempty"`
	Created       time.Time `json:"created"`
	Revoked       bool      `json:"revoked,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
}

// Session is a signed-in device's session. Only the token's SHA-256 is
// stored; the API shows a session as SessionView, without it.
type Session struct {
	ID            string `json:"id"`
	TokenHash     string `json:"token_sha256"`
	DeviceID      string `json:"device_id"`
	PrincipalID   string `json:"principal_id"`
	PrincipalKind string `json:"principal_kind"`
	Method        string `json:"method"` // password, service_key, oidc
	// Credential names what the session was signed in with (package
	// controller, credentials.go): a password (by a digest of its hash), a
	// service key (by key id) or an external identity (issuer and subject). Changing or removing that credential,
	// or its expiry, revokes the session.
	Credential string `json:"credential,omitempty"`
	// External is opaque state an external sign-in method keeps with the
	// session (e.g. the OIDC refresh token); never shown by the API.
	External  json.RawMessage `json:"external,omitempty"`
	Created   time.Time       `json:"created"`
	ExpiresAt time.Time       `json:"expires_at"`
	Revoked   bool            `json:"revoked,omitempty"`
	RevokedAt time.Time       `json:"revoked_at,omitzero"`
	// MFAAt is when this session last passed a second factor (step-up).
	MFAAt time.Time `json:"mfa_at,omitzero"`
	// MFAMethod is how: "otp" (TOTP) or "hwk" (a WebAuthn security key),
	// as the token's amr claim says (RFC 8176).
	MFAMethod string `json:"mfa_method,omitempty"`
	// RevokeReason says why the controller ended the session (e.g.
	// "password changed", "expired"); empty for a logout or an admin's
	// revocation.
	RevokeReason string `json:"revoke_reason,omitempty"`
}

// ConnectorView is a connector as the admin API shows it: its record without
// the public key, with its health.
type ConnectorView struct {
	Connector
	PublicKeyPEM  string                   `json:"public_key_pem,omitempty"` // left empty: hides the record's
	Enrolled      bool                     `json:"enrolled"`
	Load          controlapi.ConnectorLoad `json:"load"`
	LastHeartbeat *time.Time               `json:"last_heartbeat,omitempty"`
}

// RelayView is a relay as the admin API shows it: its record without the
// public key, with its health.
type RelayView struct {
	Relay
	PublicKeyPEM  string             `json:"public_key_pem,omitempty"` // left empty: hides the record's
	Enrolled      bool               `json:"enrolled"`
	LastHeartbeat *time.Time         `json:"last_heartbeat,omitempty"`
	Stats         map[string]float64 `json:"stats,omitempty"`
}

// UserView is a user without its password hash.
type UserView struct {
	ID          string `json:"id"`
	Email       string `json:"email"`
	Source      string `json:"source,omitempty"`
	Disabled    bool   `json:"disabled,omitempty"`
	HasPassword bool   `json:"has_password"`
	// OIDCSubject and OIDCIssuer: the identity provider subject bound to
	// the account (by its first verified sign-in or by oidc_subject).
	OIDCSubject string `json:"oidc_subject,omitempty"`
	OIDCIssuer  string `json:"oidc_issuer,omitempty"`
}

// ServiceKeyView is a service account's key, without its secret's hash.
type ServiceKeyView struct {
	KeyID     string    `json:"key_id"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// ServiceAccountView is a service account without key secrets.
type ServiceAccountView struct {
	ID     string           `json:"id"`
	Name   string           `json:"name"`
	Groups []string         `json:"groups"`
	Keys   []ServiceKeyView `json:"keys"`
}

// SessionView is a session as the admin API shows it: without its token hash
// and external state, and whether it is live now.
type SessionView struct {
	Session
	TokenHash string          `json:"token_sha256,omitempty"` // left empty: hides the record's
	External  json.RawMessage `json:"external,omitempty"`     // left empty: hides the record's
	Active    bool            `json:"active"`
}
