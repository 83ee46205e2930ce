// Package localapi is the contract between the client daemon (posternd) and its
// local callers (the postern CLI, postern-tray): HTTP/1.1 with JSON bodies over
// the Unix socket DIR/posternd.sock (a named pipe on Windows), never a TCP port.
// The daemon admits only callers allowed by the socket's permissions and its
// peer-credential check (SO_PEERCRED on Linux).
//
// Endpoints (all under the pseudo-host "posternd"):
//
//	POST /v1/login      LoginRequest   -> Status
//	POST /v1/logout                    -> Status
//	POST /v1/up                        -> Status
//	POST /v1/down                      -> Status
//	GET  /v1/status                    -> Status
//	GET  /v1/resources                 -> []Resource
//	GET  /v1/dns?name=N                -> DNSExplain
//	GET  /v1/events                    -> NDJSON stream of Status, one line per change
//
// Errors are an HTTP status with {"error": "...", "hint": "..."}; the hint says
// what the user should do next.
package localapi

import (
	"time"

	"postern.dev/postern/controlapi"
)

// SocketName is the socket's file name inside the state directory.
const SocketName = "posternd.sock"

// EnvSocket may name the socket instead of --socket.
const EnvSocket = "POSTERN_SOCKET"

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	Hint  string `json:"hint,omitempty"`
}

// LoginRequest signs the daemon in with exactly one credential: Email and
// Password, ServiceKey, IDToken, or a single sign-on grant (OIDC or
// OIDCDeviceFlow).
type LoginRequest struct {
	ControllerURL string `json:"controller_url"`
	CAPEM         string `json:"ca_pem,omitempty"` // the deployment CA, when not in the system roots
	Email         string `json:"email,omitempty"`
	Password      string `json:"password,omitempty"`
	ServiceKey    string `json:"service_key,omitempty"` // JSON contents of a service key file
	IDToken       string `json:"id_token,omitempty"`
	// OIDC finishes a browser sign-in started with PathSSOStart.
	OIDC *controlapi.OIDCCodeGrant `json:"oidc,omitempty"`
	// OIDCDeviceFlow is the Flow of a device sign-in started with
	// PathSSODevice; the request returns once the user approved or refused.
	OIDCDeviceFlow string `json:"oidc_device_flow,omitempty"`
}

// Daemon states.
const (
	StateSignedOut  = "signed_out"
	StateStopped    = "stopped" // signed in, tunnel down
	StateConnecting = "connecting"
	StateConnected  = "connected"
	StateDegraded   = "degraded" // controller unreachable or a connector down
	StateError      = "error"
)

// Principal is the signed-in identity.
type Principal struct {
	ID     string   `json:"id"`
	Kind   string   `json:"kind"`
	Name   string   `json:"name"`
	Groups []string `json:"groups,omitempty"`
}

// ConnectorStatus describes one connector in use.
type ConnectorStatus struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Network     string    `json:"network"`
	Path        string    `json:"path"`      // "direct" or "relay" ("" when not connected)
	Transport   string    `json:"transport"` // "udp" or "tls" (relay over TLS)
	RemoteAddr  string    `json:"remote_addr,omitempty"`
	RTTMillis   float64   `json:"rtt_ms"`
	Connected   bool      `json:"connected"`
	ActiveFlows int       `json:"active_flows"`
	TotalFlows  int64     `json:"total_flows"`
	BytesUp     int64     `json:"bytes_up"`
	BytesDown   int64     `json:"bytes_down"`
	TokenExpiry time.Time `json:"token_expiry,omitempty"`
	// State is connected, silent (connected but nothing heard lately),
	// reconnecting (no connection, redialing in the background), offline
	// (the controller says so) or idle. Since is when it entered that state
	// (for reconnecting: when the connection was lost or the first dial
	// failed); LastError is the last dial or connection error.
	State     string    `json:"state"`
	Since     time.Time `json:"since,omitempty"`
	LastError string    `json:"last_error,omitempty"`
}

// Status is the daemon's state as the CLI and tray show it.
type Status struct {
	State         string     `json:"state"`
	Version       string     `json:"version"`
	ControllerURL string     `json:"controller_url,omitempty"`
	Principal     *Principal `json:"principal,omitempty"`
	DeviceID      string     `json:"device_id,omitempty"`
	Network       string     `json:"network,omitempty"`
	// ControllerReachable is false when the policy stream is down; Since says
	// from when.
	ControllerReachable bool              `json:"controller_reachable"`
	ControllerDownSince time.Time         `json:"controller_down_since,omitempty"`
	Connectors          []ConnectorStatus `json:"connectors"`
	ActiveFlows         int               `json:"active_flows"`
	TotalFlows          int64             `json:"total_flows"`
	BytesUp             int64             `json:"bytes_up"`
	BytesDown           int64             `json:"bytes_down"`
	TUN                 string            `json:"tun,omitempty"`
	SOCKS5              string            `json:"socks5,omitempty"`
	DNS                 string            `json:"dns,omitempty"`
	Ranges              []string          `json:"ranges,omitempty"`  // synthetic address ranges in use (TUN mode)
	Message             string            `json:"message,omitempty"` // last error, for StateError/StateDegraded
	// Warnings are problems that leave the tunnel working, such as an
	// admin setting this device could not apply.
	Warnings []string `json:"warnings,omitempty"`
	// SOCKS5Secret is the file holding the SOCKS5 proxy's "user:password".
	SOCKS5Secret string `json:"socks5_secret_file,omitempty"`
}

// Resource is one resource the principal may use.
type Resource struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Alias   string   `json:"alias,omitempty"`
	Address string   `json:"address"`
	Network string   `json:"network"`
	Ports   []string `json:"ports"`
	// SyntheticAddrs are the addresses handed out for a name resource (for a
	// wildcard, those allocated so far).
	SyntheticAddrs []string `json:"synthetic_addrs,omitempty"`
	// Require and Access: the resource's access conditions and whether this
	// device meets them, with what to do when not (docs/access.md).
	Require *controlapi.Requirements   `json:"require,omitempty"`
	Access  *controlapi.ResourceAccess `json:"access,omitempty"`
}

// DNSExplain says how a name resolves right now.
type DNSExplain struct {
	Name       string   `json:"name"`
	Resource   string   `json:"resource,omitempty"`   // matched resource name
	Pattern    string   `json:"pattern,omitempty"`    // the resource address that matched
	Synthetic  []string `json:"synthetic,omitempty"`  // synthetic A/AAAA
	Connectors []string `json:"connectors,omitempty"` // connectors serving it
	Upstream   string   `json:"upstream,omitempty"`   // resolver that answers otherwise
	Answer     []string `json:"answer,omitempty"`     // upstream answer records
	Note       string   `json:"note,omitempty"`
	Mode       string   `json:"mode,omitempty"`   // "tun", "socks5" or "down"
	Ranges     []string `json:"ranges,omitempty"` // synthetic ranges in use (TUN mode)
}
