package session

import (
	"context"
	"fmt"

	"postern.dev/postern/client/sso"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
)

// ssoLogin finishes a single sign-on login (browser grant or device flow)
// with this device's key.
func (m *Manager) ssoLogin(ctx context.Context, req localapi.LoginRequest, lr controlapi.LoginRequest) (*controlapi.LoginResponse, error) {
	ctrl, err := sso.NewController(req.ControllerURL, []byte(req.CAPEM))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	resp, err := sso.Login(ctx, ctrl, req, controlapi.OIDCDevice{DevicePublicKey: lr.DevicePublicKey, DeviceName: lr.DeviceName, OS: lr.OS})
	if err != nil {
		return nil, fmt.Errorf("%w: single sign-on: %v", ErrUnauthorized, err)
	}
	return resp, nil
}

// SSOStart starts a browser sign-in at the controller for the CLI or tray.
func (m *Manager) SSOStart(ctx context.Context, req localapi.SSOStartRequest) (*controlapi.OIDCStartResponse, error) {
	if err := m.FillController(&req.ControllerURL, &req.CAPEM); err != nil {
		return nil, err
	}
	ctrl, err := sso.NewController(req.ControllerURL, []byte(req.CAPEM))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	out, err := ctrl.StartBrowser(ctx, req.OIDCStartRequest)
	if err != nil {
		return nil, fmt.Errorf("%w: start single sign-on at %s: %v", ErrControllerRefused, req.ControllerURL, err)
	}
	return out, nil
}

// SSODevice starts a device sign-in at the controller.
func (m *Manager) SSODevice(ctx context.Context, req localapi.SSODeviceRequest) (*controlapi.OIDCDeviceStartResponse, error) {
	if err := m.FillController(&req.ControllerURL, &req.CAPEM); err != nil {
		return nil, err
	}
	ctrl, err := sso.NewController(req.ControllerURL, []byte(req.CAPEM))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	out, err := ctrl.StartDevice(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: start device sign-in at %s: %v", ErrControllerRefused, req.ControllerURL, err)
	}
	return out, nil
}
