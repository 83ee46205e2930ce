package localapi

import (
	"context"
	"net/http"
	"net/url"

	"postern.dev/postern/controlapi"
)

// Access governance endpoints (docs/access.md). The daemon forwards them to
// the controller with its session:
//
//	GET  /v1/mfa                       -> controlapi.MFAStatus
//	POST /v1/mfa/enroll                -> controlapi.MFAEnrollResponse
//	POST /v1/mfa/verify   MFACode      -> controlapi.MFAStatus
//	POST /v1/mfa/remove   MFACode      -> 204
//	GET  /v1/posture                   -> Posture (this device's facts and the verdict)
//	GET  /v1/requests                  -> []controlapi.AccessRequest
//	POST /v1/requests     controlapi.AccessRequestCreate -> controlapi.AccessRequest
//	POST /v1/requests/{id}/approve|deny controlapi.AccessDecision -> controlapi.AccessRequest
const (
	PathMFA       = "/v1/mfa"
	PathMFAEnroll = "/v1/mfa/enroll"
	PathMFAVerify = "/v1/mfa/verify"
	PathMFARemove = "/v1/mfa/remove"
	PathPosture   = "/v1/posture"
	PathRequests  = "/v1/requests"
)

// MFACode carries a TOTP code.
type MFACode struct {
	Code string `json:"code"`
}

// Posture is what this device reports and how the controller judged it.
type Posture struct {
	Report  controlapi.PostureReport  `json:"report"`
	Verdict controlapi.PostureVerdict `json:"verdict"`
}

// MFAStatus returns the second-factor state.
func (c *Client) MFAStatus(ctx context.Context) (controlapi.MFAStatus, error) {
	var out controlapi.MFAStatus
	err := c.do(ctx, http.MethodGet, PathMFA, nil, &out)
	return out, err
}

// MFAEnroll starts a TOTP enrollment.
func (c *Client) MFAEnroll(ctx context.Context) (controlapi.MFAEnrollResponse, error) {
	var out controlapi.MFAEnrollResponse
	err := c.do(ctx, http.MethodPost, PathMFAEnroll, struct{}{}, &out)
	return out, err
}

// MFAVerify presents a code: it confirms an enrollment and steps up.
func (c *Client) MFAVerify(ctx context.Context, code string) (controlapi.MFAStatus, error) {
	var out controlapi.MFAStatus
	err := c.do(ctx, http.MethodPost, PathMFAVerify, MFACode{Code: code}, &out)
	return out, err
}

// MFARemove removes the enrollment (code: a current code, when needed).
func (c *Client) MFARemove(ctx context.Context, code string) error {
	return c.do(ctx, http.MethodPost, PathMFARemove, MFACode{Code: code}, nil)
}

// Posture reports this device's posture now and returns the verdict.
func (c *Client) Posture(ctx context.Context) (Posture, error) {
	var out Posture
	err := c.do(ctx, http.MethodGet, PathPosture, nil, &out)
	return out, err
}

// Requests lists my access requests and those I may decide.
func (c *Client) Requests(ctx context.Context) ([]controlapi.AccessRequest, error) {
	var out []controlapi.AccessRequest
	err := c.do(ctx, http.MethodGet, PathRequests, nil, &out)
	return out, err
}

// Request asks for time-boxed access.
func (c *Client) Request(ctx context.Context, req controlapi.AccessRequestCreate) (controlapi.AccessRequest, error) {
	var out controlapi.AccessRequest
	err := c.do(ctx, http.MethodPost, PathRequests, req, &out)
	return out, err
}

// Decide approves or denies request id (verb "approve" or "deny").
func (c *Client) Decide(ctx context.Context, id, verb string, dec controlapi.AccessDecision) (controlapi.AccessRequest, error) {
	var out controlapi.AccessRequest
	err := c.do(ctx, http.MethodPost, PathRequests+"/"+url.PathEscape(id)+"/"+verb, dec, &out)
	return out, err
}
