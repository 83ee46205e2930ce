package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"postern.dev/postern/controlapi"
)

// controlClient calls the controller's client endpoints with the session
// token, through the shared controlapi.Client.
type controlClient struct {
	api   *controlapi.Client
	token string // session token; "" before login

	// ended is closed the first time the controller answers 401 to a call
	// made with the session token: the session is over (revoked, device
	// removed, expired), whichever call noticed it.
	endOnce sync.Once
	ended   chan struct{}
}

// markEnded records a 401 answered to the session token.
func (c *controlClient) markEnded(err error) {
	if controlapi.StatusCode(err) != http.StatusUnauthorized || c.token == "" {
		return
	}
	c.endOnce.Do(func() { close(c.ended) })
}

// sessionEnded is closed once the controller refused the session.
func (c *controlClient) sessionEnded() <-chan struct{} { return c.ended }

// newControlClient builds an HTTPS client that trusts caPEM (when set) or
// the system roots.
func newControlClient(rawURL, caPEM, token string) (*controlClient, error) {
	if !strings.HasPrefix(rawURL, "https://") {
		return nil, fmt.Errorf("%w: controller URL %q: must start with https://", ErrBadRequest, rawURL)
	}
	var roots *x509.CertPool
	if caPEM != "" {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, fmt.Errorf("%w: the CA file holds no PEM certificate", ErrBadRequest)
		}
	}
	api, err := controlapi.NewClient(controlapi.ClientConfig{URL: rawURL, Roots: roots, Token: token})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return &controlClient{api: api, token: token, ended: make(chan struct{})}, nil
}

func (c *controlClient) close() { c.api.Close() }

// setToken makes the calls that follow use the session token.
func (c *controlClient) setToken(token string) {
	c.token = token
	c.api.SetToken(token)
}

// classify turns a controlapi error into the client's error kinds, so the
// CLI can say what to do.
func (c *controlClient) classify(op string, err error) error {
	var se *controlapi.StatusError
	if errors.As(err, &se) {
		c.markEnded(err)
		base := ErrControllerRefused
		switch se.StatusCode {
		case http.StatusUnauthorized:
			base = ErrUnauthorized
		case http.StatusForbidden:
			base = ErrForbidden
		}
		return fmt.Errorf("%w: %s: HTTP %d: %s", base, se.Path, se.StatusCode, se.Message)
	}
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var te *controlapi.TransportError
	switch {
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn):
		return fmt.Errorf("%w: controller %s (%s): %v", ErrCertificate, c.api.URL(), op, err)
	case errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &te), errors.Is(err, controlapi.ErrStreamIdle), errors.Is(err, controlapi.ErrStreamEnded):
		return fmt.Errorf("%w: %s (%s): %v", ErrControllerUnreachable, c.api.URL(), op, err)
	}
	return err
}

// do calls the controller, bounded by timeout (0: the client's default).
func (c *controlClient) do(ctx context.Context, method, path string, in, out any, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := c.api.Call(ctx, method, path, in, out); err != nil {
		return c.classify(strings.TrimPrefix(path, "/api/v1/"), err)
	}
	return nil
}

func (c *controlClient) login(ctx context.Context, req controlapi.LoginRequest) (*controlapi.LoginResponse, error) {
	var resp controlapi.LoginResponse
	if err := c.do(ctx, http.MethodPost, controlapi.PathLogin, req, &resp, 30*time.Second); err != nil {
		return nil, err
	}
	if resp.SessionToken == "" || resp.DeviceID == "" {
		return nil, fmt.Errorf("%w: login response without session token or device id", ErrControllerRefused)
	}
	return &resp, nil
}

func (c *controlClient) logout(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, controlapi.PathLogout, nil, nil, 10*time.Second)
}

func (c *controlClient) connectionToken(ctx context.Context, connectorID string) (*controlapi.TokenResponse, error) {
	var resp controlapi.TokenResponse
	err := c.do(ctx, http.MethodPost, controlapi.PathConnectionToken, controlapi.TokenRequest{ConnectorID: connectorID}, &resp, 15*time.Second)
	if err != nil {
		return nil, err
	}
	return &resp, nil
}

// policyStream reads the NDJSON policy stream, calling fn for every snapshot,
// until the stream ends, goes silent for the stream idle timeout, the session
// ends or ctx is done. connected is called once the response headers arrived.
func (c *controlClient) policyStream(ctx context.Context, rev int64, connected func(), fn func(*controlapi.ClientPolicy)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-c.ended:
			cancel(ErrSessionEnded)
		case <-ctx.Done():
		}
	}()
	err := c.api.Stream(ctx, controlapi.PathClientPolicy, rev, func(line []byte) error {
		if line == nil {
			connected()
			return nil
		}
		var p controlapi.ClientPolicy
		if err := json.Unmarshal(line, &p); err != nil {
			return fmt.Errorf("policy stream: bad line: %w", err)
		}
		if !p.Keepalive {
			fn(&p)
		}
		return nil
	})
	if errors.Is(context.Cause(ctx), ErrSessionEnded) {
		return ErrSessionEnded
	}
	// The controller ends a client's stream with an error line only when
	// the session is over (signed out elsewhere, expired, device revoked).
	var se *controlapi.StreamError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: %s", ErrSessionEnded, se.Message)
	}
	return c.classify("policy stream", err)
}
