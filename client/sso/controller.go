package sso

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"postern.dev/postern/controlapi"
)

// Controller calls the controller's single sign-on endpoints
// (controlapi.PathOIDC*). The daemon uses it with the trust it already has;
// the CLI may use it directly. Set URL and HTTP, or use NewController.
type Controller struct {
	URL  string // https://controller.example
	HTTP *http.Client

	once sync.Once
	api  *controlapi.Client
	err  error
}

// NewController returns a Controller that trusts the system roots plus caPEM
// (the deployment CA; may be empty) and speaks TLS 1.3.
func NewController(controllerURL string, caPEM []byte) (*Controller, error) {
	var roots *x509.CertPool
	if len(bytes.TrimSpace(caPEM)) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("controller CA: no PEM certificate found")
		}
		roots = pool
	}
	api, err := controlapi.NewClient(controlapi.ClientConfig{URL: controllerURL, Roots: roots})
	if err != nil {
		return nil, err
	}
	c := &Controller{URL: api.URL(), api: api}
	c.once.Do(func() {})
	return c, nil
}

func (c *Controller) call(ctx context.Context, method, path string, in, out any) error {
	c.once.Do(func() {
		c.api, c.err = controlapi.NewClient(controlapi.ClientConfig{URL: c.URL, HTTP: c.HTTP})
	})
	if c.err != nil {
		return fmt.Errorf("%w: %v", ErrController, c.err)
	}
	err := c.api.Call(ctx, method, path, in, out)
	var se *controlapi.StatusError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		switch se.StatusCode {
		case http.StatusNotFound, http.StatusNotImplemented:
			return fmt.Errorf("%w (%s)", ErrNotConfigured, se.Message)
		case http.StatusForbidden, http.StatusUnauthorized:
			return fmt.Errorf("%w: %s", ErrRefused, se.Message)
		case http.StatusGone:
			return fmt.Errorf("%w: %s", ErrExpired, se.Message)
		}
	case errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: %v", ErrController, err)
}

// Config says whether single sign-on is available.
func (c *Controller) Config(ctx context.Context) (*controlapi.OIDCConfig, error) {
	var out controlapi.OIDCConfig
	if err := c.call(ctx, http.MethodGet, controlapi.PathOIDCConfig, nil, &out); err != nil {
		return nil, err
	}
	if !out.Enabled {
		return nil, ErrNotConfigured
	}
	return &out, nil
}

// StartBrowser starts a browser sign-in (implements Starter).
func (c *Controller) StartBrowser(ctx context.Context, req controlapi.OIDCStartRequest) (*controlapi.OIDCStartResponse, error) {
	var out controlapi.OIDCStartResponse
	if err := c.call(ctx, http.MethodPost, controlapi.PathOIDCStart, req, &out); err != nil {
		return nil, err
	}
	if out.AuthURL == "" || out.Flow == "" || out.State == "" {
		return nil, fmt.Errorf("%w: sign-in start answer lacks auth_url, flow or state", ErrController)
	}
	return &out, nil
}

// Exchange finishes a browser sign-in for the device.
func (c *Controller) Exchange(ctx context.Context, g controlapi.OIDCCodeGrant, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, error) {
	var out controlapi.LoginResponse
	if err := c.call(ctx, http.MethodPost, controlapi.PathOIDCExchange, controlapi.OIDCExchangeRequest{OIDCCodeGrant: g, OIDCDevice: dev}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// StartDevice starts a device sign-in; show the user UserCode and
// VerificationURI, then WaitDevice.
func (c *Controller) StartDevice(ctx context.Context) (*controlapi.OIDCDeviceStartResponse, error) {
	var out controlapi.OIDCDeviceStartResponse
	if err := c.call(ctx, http.MethodPost, controlapi.PathOIDCDeviceStart, struct{}{}, &out); err != nil {
		return nil, err
	}
	if out.Flow == "" || out.UserCode == "" || out.VerificationURI == "" {
		return nil, fmt.Errorf("%w: device start answer lacks flow, user_code or verification_uri", ErrController)
	}
	return &out, nil
}

// WaitDevice polls the controller, at the interval it asks for, until the
// user approves (the login is returned), refuses (ErrRefused), the code
// expires (ErrExpired) or ctx ends.
func (c *Controller) WaitDevice(ctx context.Context, flow string, dev controlapi.OIDCDevice, interval time.Duration) (*controlapi.LoginResponse, error) {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	for {
		var out controlapi.OIDCDevicePollResponse
		err := c.call(ctx, http.MethodPost, controlapi.PathOIDCDevicePoll, controlapi.OIDCDevicePollRequest{Flow: flow, OIDCDevice: dev}, &out)
		if err != nil {
			return nil, err
		}
		switch out.Status {
		case controlapi.OIDCOK:
			if out.Login == nil {
				return nil, fmt.Errorf("%w: device poll said ok without a login", ErrController)
			}
			return out.Login, nil
		case controlapi.OIDCSlowDown:
			interval += 5 * time.Second // RFC 8628 section 3.5
		case controlapi.OIDCPending:
		default:
			return nil, fmt.Errorf("%w: device poll status %q", ErrController, out.Status)
		}
		if out.IntervalSeconds > 0 && time.Duration(out.IntervalSeconds)*time.Second > interval {
			interval = time.Duration(out.IntervalSeconds) * time.Second
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("device sign-in: %w", ctx.Err())
		case <-t.C:
		}
	}
}
