package localapi

import (
	"context"
	"net/http"

	"postern.dev/postern/controlapi"
)

// Single sign-on through the daemon (issue 8). The CLI and the tray run the
// user-facing half of the sign-in (the system browser with a loopback
// redirect, or showing a device code) in the user's session; the daemon talks
// to the controller, with the trust it already has, and finishes the login
// with its device key.
//
//	POST /v1/sso/start   SSOStartRequest -> controlapi.OIDCStartResponse
//	POST /v1/sso/device  SSODeviceRequest -> controlapi.OIDCDeviceStartResponse
//	POST /v1/login       LoginRequest with OIDC (browser) or OIDCDeviceFlow
//	                     (device; the daemon polls until the user approves,
//	                     refuses or the code expires) -> Status
const (
	PathSSOStart  = "/v1/sso/start"
	PathSSODevice = "/v1/sso/device"
)

// SSOStartRequest asks the daemon to start a browser sign-in at a controller.
type SSOStartRequest struct {
	ControllerURL string `json:"controller_url"`
	CAPEM         string `json:"ca_pem,omitempty"`
	controlapi.OIDCStartRequest
}

// SSODeviceRequest asks the daemon to start a device sign-in at a controller.
type SSODeviceRequest struct {
	ControllerURL string `json:"controller_url"`
	CAPEM         string `json:"ca_pem,omitempty"`
}

// SSOStart starts a browser sign-in through the daemon (PathSSOStart).
func (c *Client) SSOStart(ctx context.Context, req SSOStartRequest) (controlapi.OIDCStartResponse, error) {
	var out controlapi.OIDCStartResponse
	err := c.do(ctx, http.MethodPost, PathSSOStart, req, &out)
	return out, err
}

// SSODevice starts a device sign-in through the daemon (PathSSODevice).
func (c *Client) SSODevice(ctx context.Context, req SSODeviceRequest) (controlapi.OIDCDeviceStartResponse, error) {
	var out controlapi.OIDCDeviceStartResponse
	err := c.do(ctx, http.MethodPost, PathSSODevice, req, &out)
	return out, err
}
