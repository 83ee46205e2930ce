package controlapi

import (
	"encoding/json"
	"time"
)

// Access governance (issue 17): per-resource requirements beyond group
// membership, the state connectors need to judge them, and the client and
// admin endpoints for second factors, device posture and access requests.

// Endpoint paths for access governance.
const (
	// Client (bearer session token).
	PathMFA          = "/api/v1/client/mfa"              // GET -> MFAStatus; DELETE removes the enrollment
	PathMFAEnroll    = "/api/v1/client/mfa/enroll"       // POST -> MFAEnrollResponse (a new, unconfirmed secret)
	PathMFAVerify    = "/api/v1/client/mfa/verify"       // POST MFAVerifyRequest -> MFAStatus (confirms enrollment, steps up)
	PathPosture      = "/api/v1/client/posture"          // POST PostureReport -> PostureVerdict
	PathMyRequests   = "/api/v1/client/access-requests"  // GET -> []AccessRequest (mine and those I may approve); POST AccessRequestCreate -> AccessRequest
	PathMyRequestAct = "/api/v1/client/access-requests/" // + ID + "/approve" (AccessDecision) or "/deny" (AccessDecision)
	// Admin (admin token): the same requests for every user.
	PathAccessRequests = "/api/v1/access-requests" // GET -> []AccessRequest; POST {id}/approve, {id}/deny with AccessDecision
)

// Requirements are a resource's access conditions beyond group membership.
type Requirements struct {
	// MFASeconds: the device must have passed a second factor within this
	// many seconds (0: no requirement).
	MFASeconds int64 `json:"mfa_seconds,omitempty"`
	// Posture profiles the device must satisfy, all of them.
	Posture []string `json:"posture,omitempty"`
	// Approval: access only through an approved, time-boxed request.
	Approval bool `json:"approval,omitempty"`
}

// Empty reports whether r asks for nothing.
func (r *Requirements) Empty() bool {
	return r == nil || (r.MFASeconds == 0 && len(r.Posture) == 0 && !r.Approval)
}

// ConnectorAccess is the access state a connector judges requirements
// with, beside the claims of each Connection Token. The connector takes
// the newer of the two: a step-up or an approval reaches running
// connections within a second, without waiting for a token refresh.
type ConnectorAccess struct {
	// AutoLockSeconds: a principal that has not used a resource for this
	// long is locked out of it until a request is approved (0: off).
	AutoLockSeconds int64 `json:"auto_lock_seconds,omitempty"`
	// MFA maps device id to the time of its last second factor.
	MFA map[string]time.Time `json:"mfa,omitempty"`
	// DevicePosture maps device id to the posture profiles it satisfies by
	// its latest report (the controller's current verdict; it overrides the
	// token's claim).
	DevicePosture map[string][]string `json:"device_posture,omitempty"`
}

// ResourceAccess is, for one principal and device, whether a resource's
// requirements are met and what to do when they are not (client policy).
type ResourceAccess struct {
	// State is "ok", "mfa", "posture", "approval" or "locked".
	State string `json:"state"`
	// Message says why and what to do, e.g. "needs MFA (postern mfa)".
	Message string `json:"message,omitempty"`
	// Until: the end of the approved grant or MFA window that gives access.
	Until      time.Time `json:"until,omitzero"`
	ApprovedBy string    `json:"approved_by,omitempty"`
}

// MFAStatus is the second-factor state of the signed-in user and device.
type MFAStatus struct {
	Enrolled bool      `json:"enrolled"`
	Pending  bool      `json:"pending,omitempty"` // enrolled but not confirmed with a first code
	LastAt   time.Time `json:"last_at,omitzero"`  // this device's last second factor
	// TOTP: a confirmed TOTP enrollment; SecurityKeys: enrolled WebAuthn
	// credentials.
	TOTP         bool `json:"totp,omitempty"`
	SecurityKeys int  `json:"security_keys,omitempty"`
}

// MFAEnrollResponse carries a fresh TOTP secret as an otpauth:// URI.
type MFAEnrollResponse struct {
	URI    string `json:"uri"`
	Secret string `json:"secret"` // base32, for manual entry
}

// MFAVerifyRequest carries a TOTP code.
type MFAVerifyRequest struct {
	Code string `json:"code"`
}

// PostureReport is what a device reports about itself. It is
// self-reported: a modified client can lie (docs/access.md).
type PostureReport struct {
	OS             string `json:"os"`         // GOOS: linux, windows, darwin
	OSVersion      string `json:"os_version"` // kernel or OS release, e.g. "6.1.0"
	OSName         string `json:"os_name,omitempty"`
	DiskEncryption bool   `json:"disk_encryption"`
	Firewall       bool   `json:"firewall"`
	ClientVersion  string `json:"client_version"`
	// Reported is when the device collected the facts.
	Reported time.Time `json:"reported"`
}

// SignedPosture is a posture report signed with the device's Ed25519 key:
// Signature is base64 (std) of ed25519.Sign(key, PostureSigningInput(Report,
// device id)). Report is the report's JSON exactly as signed; its Reported
// time must be within PostureMaxSkew of the controller's clock.
type SignedPosture struct {
	Report    json.RawMessage `json:"report"`
	Signature string          `json:"signature"`
}

// PostureMaxSkew bounds how old (or how far ahead) a signed report may be.
const PostureMaxSkew = 5 * time.Minute

// PostureSigningInput is what a device signs for a posture report.
func PostureSigningInput(report []byte, device string) []byte {
	return []byte("postern-posture-v1\n" + device + "\n" + string(report))
}

// PostureVerdict is the controller's evaluation of a report.
type PostureVerdict struct {
	Satisfied []string          `json:"satisfied"`
	Failed    map[string]string `json:"failed,omitempty"` // profile -> first reason, e.g. "disk encryption off"
}

// AccessRequestCreate asks for time-boxed access to a resource.
type AccessRequestCreate struct {
	Resource string `json:"resource"` // name or id
	Duration string `json:"duration"` // e.g. "2h"
	Reason   string `json:"reason"`
}

// AccessDecision approves (optionally shortening the duration) or denies.
type AccessDecision struct {
	Duration string `json:"duration,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// AccessRequest is one just-in-time access request.
type AccessRequest struct {
	ID           string    `json:"id"`
	Resource     string    `json:"resource"` // name
	ResourceID   string    `json:"resource_id"`
	Requester    string    `json:"requester"` // email or account name
	RequesterID  string    `json:"requester_id"`
	Duration     string    `json:"duration"`
	Reason       string    `json:"reason"`
	State        string    `json:"state"` // pending, approved, active, expired, denied
	Created      time.Time `json:"created"`
	DecidedBy    string    `json:"decided_by,omitempty"`
	DecidedAt    time.Time `json:"decided_at,omitzero"`
	DecideReason string    `json:"decide_reason,omitempty"`
	Start        time.Time `json:"start,omitzero"`
	End          time.Time `json:"end,omitzero"`
	// CanDecide: the caller may approve or deny it (client listing).
	CanDecide bool `json:"can_decide,omitempty"`
}
