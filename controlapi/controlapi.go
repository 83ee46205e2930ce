// Package controlapi is the wire contract between the controller and the
// programs that talk to it (connector, relay, client daemon, CLI): endpoint
// paths, JSON request and response bodies, the push-stream framing and the
// enrollment token format. The controller implements it; everyone else is a
// caller. Admin objects (resources, groups, ...) live in the controller's own
// API and network.yaml, not here.
//
// Transport: HTTPS, TLS 1.3. The controller's TLS listener presents its leaf
// certificate followed by the deployment CA certificate, so a caller holding
// only the CA fingerprint (from an enrollment token) can pin it
// (pki.FetchCAByFingerprint). Errors are an HTTP status with {"error": "..."}.
//
// Authentication:
//   - admin API: "Authorization: Bearer <admin token>".
//   - connectors and relays: mutual TLS with the client certificate issued at
//     enrollment (CN "connector:<id>" or "relay:<id>", signed by the CA),
//     renewed through PathRenew before it expires.
//   - client devices: "Authorization: Bearer <session token>" from PathLogin.
//
// Push streams (PathConnectorPolicy, PathClientPolicy) are long-lived GET
// responses in newline-delimited JSON: one object per line. The first line is
// a full snapshot; later lines are full snapshots after each change, sent
// within 1 s of the commit. Every snapshot carries the store revision; a
// caller that reconnects with ?rev=N gets nothing until the revision moves past
// N. Keepalive lines {"keepalive":true} arrive every 15 s; a caller that sees
// nothing for 45 s reconnects.
package controlapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Endpoint paths.
const (
	PathJWKS   = "/.well-known/jwks.json"
	PathHealth = "/healthz"

	// Enrollment (no auth; the enrollment token's secret is the proof).
	PathEnrollConnector = "/api/v1/enroll/connector" // EnrollRequest -> EnrollResponse
	PathEnrollRelay     = "/api/v1/enroll/relay"     // EnrollRequest -> EnrollResponse
	// Credential renewal (mTLS, component cert).
	PathRenew = "/api/v1/renew" // RenewRequest -> EnrollResponse

	// Connector endpoints (mTLS).
	PathConnectorHeartbeat = "/api/v1/connector/heartbeat"     // Heartbeat -> HeartbeatResponse
	PathConnectorPolicy    = "/api/v1/connector/policy/stream" // NDJSON of ConnectorPolicy
	PathConnectorEvents    = "/api/v1/connector/events"        // FlowEvents -> 204

	// Relay endpoints (mTLS).
	PathRelayRegister = "/api/v1/relay/register" // RelayRegister -> RelayRegisterResponse (also the relay's heartbeat)

	// TURN/STUN credentials for enrolled connectors (mTLS) and signed-in clients (bearer).
	PathTURNCredentials = "/api/v1/turn/credentials" // -> TURNCredentials

	// Client endpoints.
	PathLogin           = "/api/v1/client/login"            // LoginRequest -> LoginResponse (no auth)
	PathLogout          = "/api/v1/client/logout"           // bearer -> 204, revokes the session
	PathConnectionToken = "/api/v1/client/connection-token" // bearer, TokenRequest -> TokenResponse
	PathClientPolicy    = "/api/v1/client/policy/stream"    // bearer, NDJSON of ClientPolicy
)

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

// EnrollmentToken is what `connector-token` and `relay-token` print, encoded by
// Encode as "pst1_" + base64url(JSON).
type EnrollmentToken struct {
	Kind          string `json:"k"` // "connector" or "relay"
	Name          string `json:"n"`
	ControllerURL string `json:"u"`
	CAFingerprint string `json:"f"` // hex SHA-256 of the CA certificate DER
	Secret        string `json:"s"`
}

const tokenPrefix = "pst1_"

// Encode renders the token for printing.
func (t EnrollmentToken) Encode() string {
	b, _ := json.Marshal(t)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ErrBadEnrollmentToken is returned for a token that cannot be decoded.
var ErrBadEnrollmentToken = errors.New("malformed enrollment token")

// ParseEnrollmentToken decodes a printed token.
func ParseEnrollmentToken(s string) (EnrollmentToken, error) {
	var t EnrollmentToken
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, tokenPrefix) || len(s) > 4096 {
		return t, fmt.Errorf("%w: it should start with %q", ErrBadEnrollmentToken, tokenPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(s[len(tokenPrefix):])
	if err != nil {
		return t, fmt.Errorf("%w: %v", ErrBadEnrollmentToken, err)
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, fmt.Errorf("%w: %v", ErrBadEnrollmentToken, err)
	}
	if t.ControllerURL == "" || len(t.CAFingerprint) != 64 || t.Secret == "" || (t.Kind != "connector" && t.Kind != "relay") {
		return t, fmt.Errorf("%w: missing fields", ErrBadEnrollmentToken)
	}
	return t, nil
}

// EnrollRequest exchanges an enrollment secret (once) for a credential bound to
// the component's own key.
type EnrollRequest struct {
	Secret string `json:"secret"`
	// PEM of a PKIX public key (Ed25519 or ECDSA) the component generated.
	PublicKeyPEM string `json:"public_key_pem"`
	Version      string `json:"version,omitempty"`
	Hostname     string `json:"hostname,omitempty"`
}

// EnrollResponse carries the component's identity and client certificate.
type EnrollResponse struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	Network        string    `json:"network,omitempty"` // connector: remote network name
	CertificatePEM string    `json:"certificate_pem"`   // client cert, CN "connector:<id>"/"relay:<id>"
	CAPEM          string    `json:"ca_pem"`
	NotAfter       time.Time `json:"not_after"`
}

// RenewRequest asks for a fresh credential, optionally for a new key.
type RenewRequest struct {
	PublicKeyPEM string `json:"public_key_pem,omitempty"`
}

// ConnectorLoad is the load a connector reports.
type ConnectorLoad struct {
	ActiveFlows int     `json:"active_flows"`
	Connections int     `json:"connections"`
	BytesPerSec float64 `json:"bytes_per_sec"`
	CPUFraction float64 `json:"cpu_fraction"`
}

// Heartbeat is sent by each connector every HeartbeatInterval.
type Heartbeat struct {
	// Hex SHA-256 of the DER of every certificate the connector currently
	// accepts QUIC with, newest first. The first is the current one: new
	// Connection Tokens carry it. The others are kept during a rotation.
	CertSHA256 []string `json:"cert_sha256"`
	Version    string   `json:"version"`
	// QUIC listen addresses reachable by clients ("ip:port"), host and
	// server-reflexive alike.
	Addrs []string      `json:"addrs"`
	Load  ConnectorLoad `json:"load"`
}

// HeartbeatResponse tells the connector how often to report.
type HeartbeatResponse struct {
	IntervalSeconds int `json:"interval_seconds"`
}

// HeartbeatInterval is the default; three missed heartbeats mark a connector offline.
const HeartbeatInterval = 5 * time.Second

// PolicyResource is one resource as a connector or client sees it.
type PolicyResource struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Alias   string   `json:"alias,omitempty"`
	Address string   `json:"address"` // name, *.wildcard, IP or CIDR (policy.ParseAddress)
	Network string   `json:"network"` // remote network name
	Ports   []string `json:"ports"`   // policy.ParsePortRule specs; empty = all
	// Require: access conditions beyond membership (access.go).
	Require *Requirements `json:"require,omitempty"`
	// Access (client policy only): whether this principal and device meet
	// Require now, and what to do when not.
	Access *ResourceAccess `json:"access,omitempty"`
}

// ConnectorResource adds who may reach it.
type ConnectorResource struct {
	PolicyResource
	// Principal ids allowed (groups expanded by the controller).
	Principals []string `json:"principals"`
	// Group names allowed (informational).
	Groups []string `json:"groups,omitempty"`
	// Grants maps principal id to the end of its approved access request.
	Grants map[string]time.Time `json:"grants,omitempty"`
	// LastUse maps principal id to its last use of the resource (or the
	// start of its auto-lock window), when auto-lock is on.
	LastUse map[string]time.Time `json:"last_use,omitempty"`
}

// ConnectorPolicy is a snapshot pushed to a connector.
type ConnectorPolicy struct {
	Keepalive   bool                `json:"keepalive,omitempty"`
	Revision    int64               `json:"rev"`
	ConnectorID string              `json:"connector_id"`
	Network     string              `json:"network"`
	Issuer      string              `json:"issuer"` // expected iss of Connection Tokens
	JWKS        json.RawMessage     `json:"jwks"`   // the controller's token keys
	Resources   []ConnectorResource `json:"resources"`
	Relays      []RelayInfo         `json:"relays"`
	// Revoked device ids: connections of these devices are closed.
	RevokedDevices []string `json:"revoked_devices,omitempty"`
	// Access is the state requirements are judged with (access.go).
	Access ConnectorAccess `json:"access"`
	// ControllerURLs are the controller's replicas (its public URL first):
	// a part that loses the one it talks to tries the others.
	ControllerURLs []string `json:"controller_urls,omitempty"`
}

// ConnectorInfo is a connector as a client sees it.
type ConnectorInfo struct {
	ID         string        `json:"id"`
	Name       string        `json:"name"`
	Network    string        `json:"network"`
	Online     bool          `json:"online"`
	CertSHA256 []string      `json:"cert_sha256"`
	Addrs      []string      `json:"addrs"`
	Load       ConnectorLoad `json:"load"`
}

// RelayInfo is a relay as clients and connectors see it.
type RelayInfo struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	UDPAddr string `json:"udp_addr"` // STUN/TURN over UDP, "ip:port"
	TLSAddr string `json:"tls_addr"` // TURN over TLS and signaling, "ip:port"
	Online  bool   `json:"online"`
	// Hex SHA-256 of the DER of the relay's self-signed TLS certificate
	// (RelayRegister.TLSCertSHA256): clients and connectors pin it when they
	// open the TLS listener (signaling, TURN over TLS).
	TLSCertSHA256 string `json:"tls_cert_sha256,omitempty"`
}

// Principal identifies a signed-in user or service account.
type Principal struct {
	ID     string   `json:"id"`
	Kind   string   `json:"kind"` // "user" or "service_account"
	Name   string   `json:"name"` // email or account name
	Groups []string `json:"groups"`
}

// ClientPolicy is a snapshot pushed to a client device.
type ClientPolicy struct {
	Keepalive  bool             `json:"keepalive,omitempty"`
	Revision   int64            `json:"rev"`
	Principal  Principal        `json:"principal"`
	Issuer     string           `json:"issuer"`
	JWKS       json.RawMessage  `json:"jwks"`
	Resources  []PolicyResource `json:"resources"`
	Connectors []ConnectorInfo  `json:"connectors"` // those serving the listed resources' networks
	Relays     []RelayInfo      `json:"relays"`
	// ControllerURLs are the controller's replicas (its public URL first):
	// a part that loses the one it talks to tries the others.
	ControllerURLs []string `json:"controller_urls,omitempty"`
	// Range4 and Range6 are the deployment's default synthetic ranges
	// (CIDR; client_ranges in the applied policy file).
	// A client uses them in TUN mode unless its own --range4/--range6 or IT
	// preset sets the range; empty: the built-in defaults.
	Range4 string `json:"range4,omitempty"`
	Range6 string `json:"range6,omitempty"`
}

// LoginRequest signs a device in with one credential.
type LoginRequest struct {
	// Built-in account.
	Email    string `json:"email,omitempty"`
	Password string `json:"password,omitempty"`
	// Service account key (the key file's contents, see ServiceKey).
	ServiceKey *ServiceKey `json:"service_key,omitempty"`
	// OIDC: an ID token the client obtained from the identity provider.
	IDToken string `json:"id_token,omitempty"`
	// The device's Ed25519 public key, base64 (std) of the 32 raw bytes.
	DevicePublicKey string `json:"device_public_key"`
	DeviceName      string `json:"device_name,omitempty"`
	OS              string `json:"os,omitempty"`
}

// ServiceKey is the JSON key file of a service account.
type ServiceKey struct {
	Type       string `json:"type"` // "postern-service-key"
	AccountID  string `json:"account_id"`
	KeyID      string `json:"key_id"`
	Secret     string `json:"secret"`
	Controller string `json:"controller,omitempty"`
}

// LoginResponse carries the session.
type LoginResponse struct {
	SessionToken string    `json:"session_token"`
	ExpiresAt    time.Time `json:"expires_at"`
	DeviceID     string    `json:"device_id"`
	Principal    Principal `json:"principal"`
}

// TokenRequest asks for a Connection Token for one connector.
type TokenRequest struct {
	ConnectorID string `json:"connector_id"`
}

// TokenResponse carries the token and what it binds.
type TokenResponse struct {
	Token      string    `json:"token"`
	ExpiresAt  time.Time `json:"expires_at"`
	CertSHA256 string    `json:"cert_sha256"`
}

// RelayRegister is sent by a relay at start and every HeartbeatInterval.
type RelayRegister struct {
	PublicIP string             `json:"public_ip"`
	UDPAddr  string             `json:"udp_addr"`
	TLSAddr  string             `json:"tls_addr"`
	Version  string             `json:"version"`
	Stats    map[string]float64 `json:"stats,omitempty"`
	// Hex SHA-256 of the DER of the certificate the TLS listener presents;
	// the controller copies it into RelayInfo.TLSCertSHA256.
	TLSCertSHA256 string `json:"tls_cert_sha256,omitempty"`
}

// RelayRegisterResponse gives the relay the shared secret it uses to check
// TURN credentials issued by the controller (RFC 8489-style REST credentials:
// username "<unix expiry>:<principal>", password base64(HMAC-SHA1(secret, username))),
// and the JWKS/issuer it uses to authenticate signaling peers.
type RelayRegisterResponse struct {
	ID              string          `json:"id"`
	TURNSecret      string          `json:"turn_secret"`
	Realm           string          `json:"realm"`
	Issuer          string          `json:"issuer"`
	JWKS            json.RawMessage `json:"jwks"`
	IntervalSeconds int             `json:"interval_seconds"`
	// Policy is the relay policy at registration; changes arrive on
	// PathRelayPolicy within a second.
	Policy *RelayPolicy `json:"policy,omitempty"`
}

// TURNCredentials are short-lived relay credentials.
type TURNCredentials struct {
	Username  string      `json:"username"`
	Password  string      `json:"password"`
	ExpiresAt time.Time   `json:"expires_at"`
	Realm     string      `json:"realm"`
	Relays    []RelayInfo `json:"relays"`
}

// FlowEvent is one finished (or refused) flow reported by a connector.
type FlowEvent struct {
	ConnectorID string    `json:"connector_id,omitempty"`
	Principal   string    `json:"principal"`
	Device      string    `json:"device"`
	ResourceID  string    `json:"resource_id"`
	Destination string    `json:"destination"`
	Port        uint16    `json:"port"`
	Protocol    string    `json:"protocol"`
	Start       time.Time `json:"start"`
	DurationMS  int64     `json:"duration_ms"`
	BytesUp     int64     `json:"bytes_up"`   // client -> resource
	BytesDown   int64     `json:"bytes_down"` // resource -> client
	Result      string    `json:"result"`     // wire.Status string, or "closed by policy"
}

// FlowEvents is a batch.
type FlowEvents struct {
	Events []FlowEvent `json:"events"`
}

// TURNUsername returns the REST-style TURN username "<unix expiry>:<principal>".
func TURNUsername(expiry time.Time, principal string) string {
	return fmt.Sprintf("%d:%s", expiry.Unix(), principal)
}

// TURNPassword returns base64(HMAC-SHA1(secret, username)), the password
// relays expect for a TURN username issued by the controller.
func TURNPassword(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
