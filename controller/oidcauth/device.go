package oidcauth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"postern.dev/postern/controlapi"
)

// DeviceGrantType is RFC 8628's grant type.
const DeviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// DeviceFlow reports whether the identity provider supports RFC 8628.
func (p *Provider) DeviceFlow() bool { return p.deviceURL != "" }

// tokenReply is a token or device authorization endpoint's JSON answer.
type tokenReply struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	ExpiresIn    int64  `json:"expires_in"`

	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	Interval                int    `json:"interval"`

	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// postClient sends a form to an endpoint with HTTP Basic client
// authentication (RFC 6749 section 2.3.1).
func (p *Provider) postClient(ctx context.Context, endpoint string, form url.Values) (*tokenReply, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrIdP, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(p.cfg.ClientSecret))
	resp, err := p.httpClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %v", ErrIdP, endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%w: read %s: %v", ErrIdP, endpoint, err)
	}
	var r tokenReply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%w: %s answered %s with a body that is not JSON", ErrIdP, endpoint, resp.Status)
	}
	return &r, resp.StatusCode, nil
}

// DeviceStart begins a device sign-in (RFC 8628 section 3.1).
func (p *Provider) DeviceStart(ctx context.Context) (*controlapi.OIDCDeviceStartResponse, error) {
	if p.deviceURL == "" {
		return nil, fmt.Errorf("%w: the identity provider %s does not offer the device authorization grant", ErrConfig, p.cfg.Issuer)
	}
	form := url.Values{"client_id": {p.cfg.ClientID}, "scope": {strings.Join(p.oauth.Scopes, " ")}}
	r, status, err := p.postClient(ctx, p.deviceURL, form)
	if err != nil {
		return nil, fmt.Errorf("device authorization: %w", err)
	}
	if status != http.StatusOK || r.Error != "" {
		return nil, fmt.Errorf("device authorization: %w", deviceError(status, r))
	}
	if r.DeviceCode == "" || r.UserCode == "" || r.VerificationURI == "" {
		return nil, fmt.Errorf("%w: device authorization answer lacks device_code, user_code or verification_uri", ErrIdP)
	}
	interval := r.Interval
	if interval <= 0 {
		interval = 5 // RFC 8628 section 3.2 default
	}
	life := time.Duration(r.ExpiresIn) * time.Second
	if life <= 0 || life > 30*time.Minute {
		life = 10 * time.Minute
	}
	exp := p.now().Add(life)
	flow, err := p.flows.seal(flowState{Kind: kindDevice, DeviceCode: r.DeviceCode, Interval: interval, Expires: exp.Unix()})
	if err != nil {
		return nil, err
	}
	return &controlapi.OIDCDeviceStartResponse{
		UserCode:                r.UserCode,
		VerificationURI:         r.VerificationURI,
		VerificationURIComplete: r.VerificationURIComplete,
		IntervalSeconds:         interval,
		ExpiresAt:               exp,
		Flow:                    flow,
	}, nil
}

// DevicePoll asks the identity provider once whether the user approved the
// device sign-in. It returns ErrPending or ErrSlowDown (wrapped) while the
// user has not decided, ErrRefused when they refused, ErrExpired when the
// code expired, and the verified grant when they approved.
func (p *Provider) DevicePoll(ctx context.Context, flow string) (*Grant, error) {
	f, err := p.flows.open(flow, kindDevice, p.now())
	if err != nil {
		return nil, err
	}
	form := url.Values{"grant_type": {DeviceGrantType}, "device_code": {f.DeviceCode}, "client_id": {p.cfg.ClientID}}
	r, status, err := p.postClient(ctx, p.oauth.Endpoint.TokenURL, form)
	if err != nil {
		return nil, fmt.Errorf("device token: %w", err)
	}
	if status != http.StatusOK || r.Error != "" {
		return nil, fmt.Errorf("device token: %w", deviceError(status, r))
	}
	if r.AccessToken == "" {
		return nil, fmt.Errorf("%w: device token answer lacks access_token", ErrIdP)
	}
	tok := (&oauth2.Token{AccessToken: r.AccessToken, TokenType: r.TokenType, RefreshToken: r.RefreshToken}).
		WithExtra(map[string]any{"id_token": r.IDToken})
	if r.ExpiresIn > 0 {
		tok.Expiry = p.now().Add(time.Duration(r.ExpiresIn) * time.Second)
	}
	return p.grant(ctx, tok, "")
}

func deviceError(status int, r *tokenReply) error {
	desc := r.Error
	if r.ErrorDescription != "" {
		desc += ": " + r.ErrorDescription
	}
	switch r.Error {
	case "authorization_pending":
		return ErrPending
	case "slow_down":
		return ErrSlowDown
	case "access_denied", "invalid_grant", "unauthorized_client", "invalid_scope":
		return fmt.Errorf("%w: %s", ErrRefused, desc)
	case "expired_token":
		return fmt.Errorf("%w: %s", ErrExpired, desc)
	case "":
		return fmt.Errorf("%w: HTTP %d without an error code", ErrIdP, status)
	}
	return fmt.Errorf("%w: HTTP %d: %s", ErrIdP, status, desc)
}
