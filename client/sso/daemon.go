package sso

import (
	"context"
	"fmt"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
)

// DaemonStarter starts browser sign-ins through the daemon's local API
// (localapi.PathSSOStart), for the CLI and the tray, which run in the user's
// session while the daemon holds the trust in the controller.
type DaemonStarter struct {
	C             *localapi.Client
	ControllerURL string
	CAPEM         string // optional: the deployment CA when the daemon does not know it yet
}

// StartBrowser implements Starter.
func (s DaemonStarter) StartBrowser(ctx context.Context, req controlapi.OIDCStartRequest) (*controlapi.OIDCStartResponse, error) {
	out, err := s.C.SSOStart(ctx, localapi.SSOStartRequest{ControllerURL: s.ControllerURL, CAPEM: s.CAPEM, OIDCStartRequest: req})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Login finishes the single sign-on part of a daemon login request: the
// browser grant (req.OIDC) is exchanged, or the device sign-in
// (req.OIDCDeviceFlow) is waited for until the user decides. It is what
// posternd's /v1/login does when the request carries no password or key.
func Login(ctx context.Context, ctrl *Controller, req localapi.LoginRequest, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, error) {
	switch {
	case req.OIDC != nil && req.OIDCDeviceFlow != "":
		return nil, fmt.Errorf("a login request carries either a browser grant or a device flow, not both")
	case req.OIDC != nil:
		return ctrl.Exchange(ctx, *req.OIDC, dev)
	case req.OIDCDeviceFlow != "":
		return ctrl.WaitDevice(ctx, req.OIDCDeviceFlow, dev, 5*time.Second)
	}
	return nil, fmt.Errorf("the login request carries no single sign-on grant")
}
