package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"postern.dev/postern/controlapi"
)

// controlClient calls the controller's client endpoints.
type controlClient struct {
	base  *url.URL
	http  *http.Client
	token string // session token; "" before login

	// ended is closed the first time the controller answers 401 to a call
	// made with the session token: the session is over (revoked, device
	// removed, expired), whichever call noticed it.
	endOnce sync.Once
	ended   chan struct{}
}

// markEnded records a 401 answered to the session token.
func (c *controlClient) markEnded(status int) {
	if status != http.StatusUnauthorized || c.token == "" {
		return
	}
	c.endOnce.Do(func() { close(c.ended) })
}

// sessionEnded is closed once the controller refused the session.
func (c *controlClient) sessionEnded() <-chan struct{} { return c.ended }

// newControlClient builds an HTTPS client that trusts caPEM (when set) or
// the system roots.
func newControlClient(rawURL, caPEM, token string) (*controlClient, error) {
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: controller URL %q: want https://host[:port]", ErrBadRequest, rawURL)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("%w: controller URL %q: must start with https://", ErrBadRequest, rawURL)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, fmt.Errorf("%w: the CA file holds no PEM certificate", ErrBadRequest)
		}
		tlsConf.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsConf,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		IdleConnTimeout:     90 * time.Second,
		Proxy:               nil,
		// Health checks: a connection that died under us (the device roamed
		// to another network, NAT rebinding) is noticed within seconds
		// instead of hanging requests until TCP gives up.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 3 * time.Second, PingTimeout: 3 * time.Second, WriteByteTimeout: 10 * time.Second},
	}
	return &controlClient{base: u, http: &http.Client{Transport: tr}, token: token, ended: make(chan struct{})}, nil
}

func (c *controlClient) close() {
	if tr, ok := c.http.Transport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// controllerError classifies a failed call so the CLI can say what to do.
func (c *controlClient) wrap(op string, err error) error {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	inner := err
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
	}
	switch {
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn):
		return fmt.Errorf("%w: controller %s (%s): %v", ErrCertificate, c.base, op, inner)
	case errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: %s (%s): %v", ErrControllerUnreachable, c.base, op, inner)
}

func (c *controlClient) do(ctx context.Context, method, path string, in, out any, timeout time.Duration) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return fmt.Errorf("build %s request: %w", path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.wrap(strings.TrimPrefix(path, "/api/v1/"), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		c.markEnded(resp.StatusCode)
		return httpError(path, resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(out); err != nil {
		return fmt.Errorf("decode %s response: %w", path, err)
	}
	return nil
}

func httpError(path string, resp *http.Response) error {
	var e controlapi.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	base := ErrControllerRefused
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		base = ErrUnauthorized
	case http.StatusForbidden:
		base = ErrForbidden
	}
	return fmt.Errorf("%w: %s: HTTP %d: %s", base, path, resp.StatusCode, e.Error)
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
// until the stream ends, 45 s pass without a line, or ctx is done. connected
// is called once the response headers arrived.
func (c *controlClient) policyStream(ctx context.Context, rev int64, connected func(), fn func(*controlapi.ClientPolicy)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	path := controlapi.PathClientPolicy
	if rev > 0 {
		path += "?rev=" + strconv.FormatInt(rev, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path, nil)
	if err != nil {
		return fmt.Errorf("build policy request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.http.Do(req)
	if err != nil {
		return c.wrap("policy stream", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		c.markEnded(resp.StatusCode)
		return httpError(controlapi.PathClientPolicy, resp)
	}
	connected()
	lines := make(chan []byte)
	errc := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			b := append([]byte(nil), sc.Bytes()...)
			select {
			case lines <- b:
			case <-ctx.Done():
				return
			}
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		errc <- err
	}()
	idle := time.NewTimer(45 * time.Second)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ended:
			return ErrSessionEnded
		case err := <-errc:
			return c.wrap("policy stream", err)
		case <-idle.C:
			return fmt.Errorf("%w: policy stream %s: nothing received for 45 s", ErrControllerUnreachable, c.base)
		case b := <-lines:
			idle.Reset(45 * time.Second)
			if len(bytes.TrimSpace(b)) == 0 {
				continue
			}
			var p controlapi.ClientPolicy
			if err := json.Unmarshal(b, &p); err != nil {
				return fmt.Errorf("policy stream: bad line: %w", err)
			}
			if p.Keepalive {
				continue
			}
			fn(&p)
		}
	}
}
