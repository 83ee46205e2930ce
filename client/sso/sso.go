// Package sso is the client's half of single sign-on: the Authorization Code
// flow with PKCE in the system browser and a loopback redirect on an
// ephemeral port (RFC 8252), and the device authorization grant (RFC 8628)
// for machines without a browser.
//
// The controller is the OIDC relying party (controller/oidcauth): it starts
// each sign-in, redeems the code or device code with its client secret and
// keeps the refresh token. This package only does what must happen on the
// user's machine: listen for the browser's redirect, keep the PKCE verifier,
// open the browser, show a device code, and hand the result over.
//
// The postern CLI and postern-tray call Browser (with a Starter that goes
// through the daemon's local API, localapi.PathSSOStart) and pass the
// resulting grant to the daemon in localapi.LoginRequest.OIDC; the daemon
// finishes with Controller.Exchange, or with Controller.WaitDevice for
// localapi.LoginRequest.OIDCDeviceFlow.
package sso

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"postern.dev/postern/controlapi"
)

// Starter starts a browser sign-in at the controller: Controller (directly)
// or the daemon's local API.
type Starter interface {
	StartBrowser(ctx context.Context, req controlapi.OIDCStartRequest) (*controlapi.OIDCStartResponse, error)
}

// DefaultRedirect is the loopback redirect URI registered at the identity
// provider; the port is chosen at each sign-in.
const DefaultRedirect = "http://127.0.0.1/callback"

// BrowserOptions tune Browser.
type BrowserOptions struct {
	// Open shows the URL to the user; default OpenBrowser.
	Open func(url string) error
	// Notify, if set, is called with the sign-in URL before Open, so that a
	// CLI can print "if no browser opened, visit ...". Open failing is not an
	// error when Notify is set: the user can open the URL by hand.
	Notify func(url string)
	// Redirect is the registered loopback redirect URI (any port is
	// replaced); default DefaultRedirect. Take it from
	// controlapi.OIDCConfig.RedirectURIs when the controller lists one.
	Redirect string
	// Timeout bounds the whole sign-in; default 5 minutes.
	Timeout time.Duration
}

// OpenBrowser opens u in the user's default browser.
func OpenBrowser(u string) error {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") {
		return fmt.Errorf("open browser: %q is not an http(s) URL", u)
	}
	cmd := browserCommand(u)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("open browser: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	return nil
}

// NewVerifier returns a PKCE verifier (RFC 7636: 43 unreserved characters)
// and its S256 challenge.
func NewVerifier() (verifier, challenge string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("pkce verifier: %w", err)
	}
	verifier = base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(h[:]), nil
}

// callback is what the loopback listener received.
type callback struct {
	code, state string
	err         error
}

// Browser runs a browser sign-in: it listens on a loopback port, starts the
// sign-in at the controller, opens the browser and waits for the redirect.
// The returned grant goes to the daemon (localapi.LoginRequest.OIDC) or to
// Controller.Exchange.
func Browser(ctx context.Context, s Starter, opts BrowserOptions) (*controlapi.OIDCCodeGrant, error) {
	if opts.Open == nil {
		opts.Open = OpenBrowser
	}
	if opts.Redirect == "" {
		opts.Redirect = DefaultRedirect
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	ru, err := url.Parse(opts.Redirect)
	if err != nil || ru.Scheme != "http" || (ru.Hostname() != "127.0.0.1" && ru.Hostname() != "::1") {
		return nil, fmt.Errorf("redirect %q: a browser sign-in needs an http loopback redirect (http://127.0.0.1/...)", opts.Redirect)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	ln, err := net.Listen("tcp", net.JoinHostPort(ru.Hostname(), "0"))
	if err != nil {
		return nil, fmt.Errorf("listen for the browser's redirect: %w", err)
	}
	ru.Host = ln.Addr().String()
	path := ru.Path
	if path == "" {
		path = "/"
	}
	redirect := ru.String()

	verifier, challenge, err := NewVerifier()
	if err != nil {
		ln.Close()
		return nil, err
	}
	st, err := s.StartBrowser(ctx, controlapi.OIDCStartRequest{RedirectURI: redirect, CodeChallenge: challenge, CodeChallengeMethod: "S256"})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("start sign-in: %w", err)
	}

	got := make(chan callback, 1)
	var once sync.Once
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				http.NotFound(w, r)
				return
			}
			q := r.URL.Query()
			if q.Get("state") != st.State {
				// Not this sign-in's answer (a stale tab, or a forged request).
				page(w, http.StatusBadRequest, "Sign-in failed", "This answer does not belong to the sign-in in progress. Start the sign-in again.")
				return
			}
			var cb callback
			switch {
			case q.Get("error") != "":
				msg := q.Get("error")
				if d := q.Get("error_description"); d != "" {
					msg += ": " + d
				}
				cb.err = fmt.Errorf("%w by the identity provider: %s", ErrRefused, msg)
				page(w, http.StatusForbidden, "Sign-in refused", msg)
			case q.Get("code") == "":
				cb.err = fmt.Errorf("%w: the identity provider sent neither a code nor an error", ErrRefused)
				page(w, http.StatusBadRequest, "Sign-in failed", "The identity provider sent no authorization code.")
			default:
				cb.code, cb.state = q.Get("code"), q.Get("state")
				page(w, http.StatusOK, "Signed in to Postern", "You can close this window and return to Postern.")
			}
			once.Do(func() { got <- cb })
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx) // lets the success page reach the browser
	}()

	if opts.Notify != nil {
		opts.Notify(st.AuthURL)
	}
	if err := opts.Open(st.AuthURL); err != nil && opts.Notify == nil {
		return nil, err
	}

	select {
	case cb := <-got:
		if cb.err != nil {
			return nil, cb.err
		}
		return &controlapi.OIDCCodeGrant{Flow: st.Flow, State: cb.state, Code: cb.code, CodeVerifier: verifier, RedirectURI: redirect}, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w: no answer from the browser within %s", ErrExpired, opts.Timeout)
		}
		return nil, fmt.Errorf("browser sign-in: %w", ctx.Err())
	}
}

func page(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<!DOCTYPE html><html><head><meta charset="utf-8"><title>%s</title></head>
<body style="font-family:sans-serif;text-align:center;margin-top:4em"><h1>%s</h1><p>%s</p></body></html>`,
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(strings.TrimSpace(msg)))
}
