package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// ErrDaemonNotRunning means nothing answers on the socket.
var ErrDaemonNotRunning = errors.New("posternd is not running")

// APIError is an error answered by the daemon.
type APIError struct {
	StatusCode int
	Err        Error
}

func (e *APIError) Error() string { return e.Err.Error }

// Client calls the daemon's local API over its Unix socket. It is what the
// postern CLI and postern-tray use.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialLocal(ctx, path)
		},
		DisableCompression: true,
		MaxIdleConns:       2,
		IdleConnTimeout:    30 * time.Second,
	}
	return &Client{Socket: path, http: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://posternd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode daemon response: %w", err)
	}
	return nil
}

func (c *Client) dialError(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w (no daemon at %s)", ErrDaemonNotRunning, c.Socket)
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("permission denied on %s: run as root or as the daemon's user: %w", c.Socket, err)
	}
	return fmt.Errorf("talk to posternd at %s: %w", c.Socket, err)
}

func decodeError(resp *http.Response) error {
	e := &APIError{StatusCode: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e.Err) != nil || e.Err.Error == "" {
		e.Err.Error = fmt.Sprintf("daemon answered HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return e
}

// call is do for a request that answers with a T.
func call[T any](ctx context.Context, c *Client, method, path string, in any) (T, error) {
	var out T
	err := c.do(ctx, method, path, in, &out)
	return out, err
}

// Login signs the daemon in.
func (c *Client) Login(ctx context.Context, req LoginRequest) (Status, error) {
	return call[Status](ctx, c, http.MethodPost, "/v1/login", req)
}

// Logout signs the daemon out.
func (c *Client) Logout(ctx context.Context) (Status, error) {
	return call[Status](ctx, c, http.MethodPost, "/v1/logout", nil)
}

// Up brings the tunnel up.
func (c *Client) Up(ctx context.Context) (Status, error) {
	return call[Status](ctx, c, http.MethodPost, "/v1/up", nil)
}

// Down takes the tunnel down.
func (c *Client) Down(ctx context.Context) (Status, error) {
	return call[Status](ctx, c, http.MethodPost, "/v1/down", nil)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return call[Status](ctx, c, http.MethodGet, "/v1/status", nil)
}

// Resources lists the resources the signed-in principal may use.
func (c *Client) Resources(ctx context.Context) ([]Resource, error) {
	return call[[]Resource](ctx, c, http.MethodGet, "/v1/resources", nil)
}

// DNS explains how name resolves.
func (c *Client) DNS(ctx context.Context, name string) (DNSExplain, error) {
	return call[DNSExplain](ctx, c, http.MethodGet, "/v1/dns?name="+url.QueryEscape(name), nil)
}

// send sends req to the daemon and returns the response when it succeeded
// (2xx); another status is the daemon's error, decoded.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// Events calls fn with the current status and again after every change,
// until ctx is done, the daemon goes away (an error) or fn returns false.
func (c *Client) Events(ctx context.Context, fn func(Status) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://posternd/v1/events", nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		var st Status
		if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		if !fn(st) {
			return nil
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	return fmt.Errorf("event stream: %w", io.ErrUnexpectedEOF)
}
