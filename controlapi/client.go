package controlapi

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
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults of ClientConfig.
const (
	DefaultCallTimeout       = 30 * time.Second
	DefaultStreamIdleTimeout = 45 * time.Second // three missed keepalives
)

// Errors a stream ends with (besides transport errors and StatusError).
var (
	// ErrStreamIdle means nothing, not even a keepalive, arrived for the
	// stream idle timeout: the connection is presumed dead; redial.
	ErrStreamIdle = errors.New("controller stream silent")
	// ErrStreamEnded means the controller closed the stream.
	ErrStreamEnded = errors.New("controller stream ended")
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// URL is the controller's base URL, https://host[:port], or several
	// separated by commas: the replicas of one deployment, tried in that
	// order (see Client for when a call moves to the next).
	URL string
	// Roots verify the controller's certificate (the pinned deployment CA);
	// nil: the system roots.
	Roots *x509.CertPool
	// Token, when set, is sent as "Authorization: Bearer" (a client session).
	Token string
	// Certificate, when set, returns the TLS client certificate (connectors
	// and relays, mTLS); it is called on every handshake, so a renewed
	// credential is used from the next connection on.
	Certificate func() (*tls.Certificate, error)
	// CallTimeout bounds a Call (unless its context ends first);
	// 0: DefaultCallTimeout.
	CallTimeout time.Duration
	// StreamIdleTimeout ends a Stream that received nothing for that long;
	// 0: DefaultStreamIdleTimeout.
	StreamIdleTimeout time.Duration
	// HTTP replaces the HTTP client built from Roots and Certificate
	// (tests); its own Timeout, if any, also applies to streams.
	HTTP *http.Client
}

// Client calls the controller's JSON API and reads its NDJSON streams. It is
// what the client daemon, the connector, the relay and the SSO helpers use.
type Client struct {
	reps  replicas
	token atomic.Pointer[string]
	hc    *http.Client // calls
	sc    *http.Client // streams, on their own connections (see Close)
	call  time.Duration
	idle  time.Duration
}

// NewClient returns a client of the controller at cfg.URL.
func NewClient(cfg ClientConfig) (*Client, error) {
	eps, err := parseEndpoints(cfg.URL, cfg.HTTP != nil)
	if err != nil {
		return nil, err
	}
	c := &Client{hc: cfg.HTTP, call: cfg.CallTimeout, idle: cfg.StreamIdleTimeout}
	c.reps.configured, c.reps.eps = eps, eps
	c.SetToken(cfg.Token)
	if c.call <= 0 {
		c.call = DefaultCallTimeout
	}
	if c.idle <= 0 {
		c.idle = DefaultStreamIdleTimeout
	}
	if c.hc == nil {
		tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: cfg.Roots}
		if cfg.Certificate != nil {
			get := cfg.Certificate
			tlsConf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() }
		}
		tr := &http.Transport{
			TLSClientConfig:       tlsConf,
			DialContext:           NewNetDialer(dialTimeout, 30*time.Second).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ForceAttemptHTTP2:     true,
			IdleConnTimeout:       90 * time.Second,
			// Health checks: a connection that died under us (the host
			// roamed, NAT rebinding) is noticed within seconds instead of
			// hanging requests until TCP gives up.
			HTTP2: &http.HTTP2Config{SendPingTimeout: 3 * time.Second, PingTimeout: 3 * time.Second, WriteByteTimeout: 10 * time.Second},
		}
		c.hc = &http.Client{Transport: tr}
		c.sc = &http.Client{Transport: tr.Clone()}
	} else {
		c.sc = c.hc
	}
	return c, nil
}

// SetToken replaces the bearer session token ("": none), e.g. once a login
// answered with one.
func (c *Client) SetToken(token string) { c.token.Store(&token) }

// URL returns the base URL (no trailing slash) of the replica calls go to
// now.
func (c *Client) URL() string { return c.reps.current().base }

// Close releases idle connections. Calls and streams use separate
// connections, so after a credential renewal Close makes the next call
// handshake with the new certificate even while a stream stays open.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
	c.sc.CloseIdleConnections()
}

// StatusError is a non-2xx answer of the controller.
type StatusError struct {
	Method     string
	Path       string
	StatusCode int
	Message    string // the controller's {"error": ...}, else the body's start
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.StatusCode, e.Message)
}

// TransportError is a call that got no answer (DNS, TCP, TLS, timeout).
type TransportError struct {
	Method string
	Path   string
	Host   string
	Err    error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("%s %s at %s: %v", e.Method, e.Path, e.Host, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// StreamError is an {"error": ...} line: the controller ended the stream on
// purpose (e.g. the credential was revoked).
type StreamError struct {
	Path    string
	Message string
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("controller ended stream %s: %s", e.Path, e.Message)
}

// StatusCode returns the HTTP status of a StatusError in err's chain, or 0.
func StatusCode(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode
	}
	return 0
}

func (c *Client) newRequest(ctx context.Context, ep endpoint, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, ep.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s request: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := *c.token.Load(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return req, nil
}

func transportError(ep endpoint, method, path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &TransportError{Method: method, Path: path, Host: ep.host, Err: err}
}

func statusError(method, path string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e Error
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if len(msg) > 512 {
		msg = msg[:512]
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &StatusError{Method: method, Path: path, StatusCode: resp.StatusCode, Message: msg}
}

// Call sends in (when not nil) as JSON and decodes a 2xx answer into out
// (when not nil; an empty answer leaves it unchanged). A non-2xx answer is
// a *StatusError, no answer a *TransportError.
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", path, err)
		}
		body = b
	}
	ctx, cancel := context.WithTimeout(ctx, c.call)
	defer cancel()
	return c.reps.try(ctx, func(ep endpoint) error { return c.callOnce(ctx, ep, method, path, body, out) })
}

// callOnce is one attempt of Call at the replica ep.
func (c *Client) callOnce(ctx context.Context, ep endpoint, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := c.newRequest(ctx, ep, method, path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportError(ep, method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return statusError(method, path, resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return transportError(ep, method, path, fmt.Errorf("read answer: %w", err))
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}

// Stream opens the NDJSON stream at path, resuming after revision fromRev
// (?rev=fromRev; 0: from the current state), and calls fn(nil) once the
// controller accepted it, then fn(line) for every line, keepalives included
// (blank lines are skipped). It returns when ctx ends (ctx.Err()), fn fails
// (that error), the controller sends an {"error": ...} line (*StreamError),
// nothing arrives for the idle timeout (ErrStreamIdle), or the stream breaks
// (ErrStreamEnded or a *TransportError). To resume, call it again with the
// last revision applied.
func (c *Client) Stream(ctx context.Context, path string, fromRev int64, fn func(line []byte) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := path
	if fromRev > 0 {
		sep := "?"
		if strings.Contains(p, "?") {
			sep = "&"
		}
		p += sep + "rev=" + strconv.FormatInt(fromRev, 10)
	}
	idle := time.AfterFunc(c.idle, func() { cancel(ErrStreamIdle) })
	defer idle.Stop()
	var ep endpoint
	var resp *http.Response
	err := c.reps.try(ctx, func(e endpoint) error {
		req, err := c.newRequest(ctx, e, http.MethodGet, p, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/x-ndjson")
		r, err := c.sc.Do(req)
		if err != nil {
			return c.streamEnd(ctx, e, path, err)
		}
		if r.StatusCode/100 != 2 {
			defer r.Body.Close()
			return statusError(http.MethodGet, path, r)
		}
		ep, resp = e, r
		return nil
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// A stream that breaks (not one the controller or the caller ended on
	// purpose) sends the resume to the next replica, if there is one.
	broken := func(err error) error {
		var te *TransportError
		if errors.Is(err, ErrStreamIdle) || errors.Is(err, ErrStreamEnded) || errors.As(err, &te) {
			c.reps.moveFrom(ep)
		}
		return err
	}
	idle.Reset(c.idle)
	if err := fn(nil); err != nil {
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 32<<20)
	for sc.Scan() {
		idle.Reset(c.idle)
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e Error
		if json.Unmarshal(line, &e) == nil && e.Error != "" {
			return &StreamError{Path: path, Message: e.Error}
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return broken(c.streamEnd(ctx, ep, path, err))
	}
	return broken(c.streamEnd(ctx, ep, path, ErrStreamEnded))
}

// streamEnd names why a stream stopped: the idle timeout, the caller's
// context, or the transport.
func (c *Client) streamEnd(ctx context.Context, ep endpoint, path string, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		if errors.Is(cause, ErrStreamIdle) {
			return fmt.Errorf("%w: %s: nothing received for %s", ErrStreamIdle, path, c.idle)
		}
		return cause
	}
	if errors.Is(err, ErrStreamEnded) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return transportError(ep, http.MethodGet, path, err)
}
