package controlapi

import (
	"encoding/json"
	"time"
)

// WebAuthn second factor (docs/access.md). The client starts a ceremony
// with its session and gets a one-time URL; the user opens it in a browser,
// where a page served by the controller runs navigator.credentials.create
// (register a security key) or .get (step up with one) and posts the result
// back with the ceremony's secret. The client polls the ceremony until it
// is done.
const (
	// Client (bearer session token).
	PathMFAWebAuthn = "/api/v1/client/mfa/webauthn" // POST WebAuthnBegin -> WebAuthnCeremony; GET /{id} -> WebAuthnCeremony; POST /remove -> 204
	// Browser (the ceremony secret in the body is the credential).
	PathWebAuthnOptions = "/api/v1/webauthn/options" // POST WebAuthnSecret -> WebAuthnOptions
	PathWebAuthnFinish  = "/api/v1/webauthn/finish"  // POST WebAuthnFinish -> WebAuthnCeremony
	// PathWebAuthnPage is the page the browser opens (secret in the fragment).
	PathWebAuthnPage = "/mfa/webauthn/"
)

// WebAuthn ceremony kinds and states.
const (
	WebAuthnRegister = "register"
	WebAuthnLogin    = "login"

	WebAuthnPending = "pending"
	WebAuthnDone    = "done"
	WebAuthnFailed  = "failed"
)

// WebAuthnBegin starts a ceremony: registering a new security key
// (Register) or stepping up with an enrolled one.
type WebAuthnBegin struct {
	Register bool `json:"register,omitempty"`
}

// WebAuthnCeremony is a ceremony's state as its client sees it.
type WebAuthnCeremony struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	State   string    `json:"state"`
	Expires time.Time `json:"expires"`
	// URL is the page to open in a browser (only in the answer to begin:
	// it carries the ceremony's secret).
	URL string `json:"url,omitempty"`
	// Error says why a failed ceremony failed.
	Error string `json:"error,omitempty"`
	// MFA is the second-factor state once the ceremony is done.
	MFA *MFAStatus `json:"mfa,omitempty"`
}

// WebAuthnSecret names a ceremony by its secret (from the page's URL).
type WebAuthnSecret struct {
	Secret string `json:"secret"`
}

// WebAuthnOptions is what the page passes to navigator.credentials:
// PublicKey is the "publicKey" member of CredentialCreationOptions (kind
// register) or CredentialRequestOptions (kind login), binary members as
// base64url.
type WebAuthnOptions struct {
	Kind      string          `json:"kind"`
	User      string          `json:"user"`
	PublicKey json.RawMessage `json:"publicKey"`
}

// WebAuthnFinish carries the browser's PublicKeyCredential (its JSON form:
// id, rawId, type, response with base64url members).
type WebAuthnFinish struct {
	Secret     string          `json:"secret"`
	Credential json.RawMessage `json:"credential"`
}
