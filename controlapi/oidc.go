package controlapi

import "time"

// Single sign-on with an OpenID Connect identity provider (issue 8).
//
// The controller is the OIDC relying party: it holds the client secret and the
// refresh tokens, and it revokes a user's sessions when the identity provider
// stops vouching for them at a refresh. Clients only run the user-facing part:
//
//   - Browser (RFC 8252): the client picks a loopback redirect URI on an
//     ephemeral port and a PKCE verifier, POSTs PathOIDCStart with the
//     redirect URI and the S256 challenge, opens AuthURL in the system browser,
//     receives ?code&state on its loopback listener, and POSTs PathOIDCExchange
//     with the code, the verifier and its device key: the answer is a
//     LoginResponse, like PathLogin's.
//   - Device (RFC 8628): the client POSTs PathOIDCDeviceStart, shows the user
//     code and verification URI, and POSTs PathOIDCDevicePoll every
//     IntervalSeconds until the status is "ok" (with a LoginResponse).
//
// Flow is an opaque, sealed and short-lived handle the controller issued at
// the start; the client returns it unchanged. None of these endpoints need
// authentication: the identity provider's answer is the proof.
const (
	PathOIDCConfig      = "/api/v1/client/oidc/config"       // GET -> OIDCConfig
	PathOIDCStart       = "/api/v1/client/oidc/start"        // OIDCStartRequest -> OIDCStartResponse
	PathOIDCExchange    = "/api/v1/client/oidc/exchange"     // OIDCExchangeRequest -> LoginResponse
	PathOIDCDeviceStart = "/api/v1/client/oidc/device/start" // (empty body) -> OIDCDeviceStartResponse
	PathOIDCDevicePoll  = "/api/v1/client/oidc/device/poll"  // OIDCDevicePollRequest -> OIDCDevicePollResponse
)

// OIDCConfig says whether and how single sign-on is available.
type OIDCConfig struct {
	Enabled bool   `json:"enabled"`
	Issuer  string `json:"issuer,omitempty"`
	// DeviceFlow is true when the identity provider supports RFC 8628.
	DeviceFlow bool `json:"device_flow"`
	// RedirectURIs the controller accepts; a loopback one
	// ("http://127.0.0.1/callback") matches any port (RFC 8252 section 7.3).
	RedirectURIs []string `json:"redirect_uris,omitempty"`
}

// OIDCStartRequest starts a browser sign-in.
type OIDCStartRequest struct {
	RedirectURI         string `json:"redirect_uri"`
	CodeChallenge       string `json:"code_challenge"`
	CodeChallengeMethod string `json:"code_challenge_method"` // "S256" (the only one accepted)
}

// OIDCStartResponse is where to send the browser.
type OIDCStartResponse struct {
	AuthURL   string    `json:"auth_url"`
	State     string    `json:"state"`
	Flow      string    `json:"flow"`
	ExpiresAt time.Time `json:"expires_at"`
}

// OIDCCodeGrant is what the client's loopback listener received, with the PKCE
// verifier it kept.
type OIDCCodeGrant struct {
	Flow         string `json:"flow"`
	State        string `json:"state"`
	Code         string `json:"code"`
	CodeVerifier string `json:"code_verifier"`
	RedirectURI  string `json:"redirect_uri"`
}

// OIDCDevice describes the device signing in (the same fields as LoginRequest).
type OIDCDevice struct {
	// The device's Ed25519 public key, base64 (std) of the 32 raw bytes.
	DevicePublicKey string `json:"device_public_key"`
	DeviceName      string `json:"device_name,omitempty"`
	OS              string `json:"os,omitempty"`
}

// OIDCExchangeRequest finishes a browser sign-in.
type OIDCExchangeRequest struct {
	OIDCCodeGrant
	OIDCDevice
}

// OIDCDeviceStartResponse is what the user must do on another device.
type OIDCDeviceStartResponse struct {
	UserCode                string    `json:"user_code"`
	VerificationURI         string    `json:"verification_uri"`
	VerificationURIComplete string    `json:"verification_uri_complete,omitempty"`
	IntervalSeconds         int       `json:"interval_seconds"`
	ExpiresAt               time.Time `json:"expires_at"`
	Flow                    string    `json:"flow"`
}

// OIDCDevicePollRequest asks whether the user has approved the device sign-in.
type OIDCDevicePollRequest struct {
	Flow string `json:"flow"`
	OIDCDevice
}

// Device poll statuses. A refusal or an expired code is an error response
// (403 and 410) instead.
const (
	OIDCPending  = "pending"   // ask again after IntervalSeconds
	OIDCSlowDown = "slow_down" // ask again after IntervalSeconds, or 5 s more than before when unset (RFC 8628 3.5)
	OIDCOK       = "ok"        // Login is set
)

// OIDCDevicePollResponse is one poll's answer.
type OIDCDevicePollResponse struct {
	Status          string         `json:"status"`
	IntervalSeconds int            `json:"interval_seconds,omitempty"`
	Login           *LoginResponse `json:"login,omitempty"`
}
