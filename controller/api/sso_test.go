package api

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth"
)

// ssoCore is an in-memory single sign-on: a provider whose answers the
// test sets, a throttle, and the record of what was called.
type ssoCore struct {
	fakeCore
	providerErr error
	wait        time.Duration // throttle
	prov        *fakeProvider
	failed      []error
	sessions    int
}

type throttleErr struct{ wait time.Duration }

func (e *throttleErr) Error() string             { return fmt.Sprintf("too many failed sign-ins: wait %s", e.wait) }
func (e *throttleErr) RetryAfter() time.Duration { return e.wait }

func (f *ssoCore) OIDCConfig() controlapi.OIDCConfig {
	return controlapi.OIDCConfig{Enabled: f.prov != nil}
}

func (f *ssoCore) OIDCProvider(ip string) (OIDCProvider, error) {
	if f.providerErr != nil {
		return nil, f.providerErr
	}
	return f.prov, nil
}

func (f *ssoCore) SSOThrottle(ctx context.Context, ip string) error {
	if f.wait > 0 {
		return &throttleErr{f.wait}
	}
	return nil
}

func (f *ssoCore) SSOSignInFailed(ctx context.Context, ip string, err error) {
	f.failed = append(f.failed, err)
}

func (f *ssoCore) SignInGrant(ctx context.Context, g *oidcauth.Grant, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, int, error) {
	f.sessions++
	return &controlapi.LoginResponse{SessionToken: "pss_1", DeviceID: dev.DeviceName}, 0, nil
}

type fakeProvider struct {
	err      error // of Exchange and DevicePoll
	redeemed int
}

func (p *fakeProvider) Start(req controlapi.OIDCStartRequest) (*controlapi.OIDCStartResponse, error) {
	return &controlapi.OIDCStartResponse{}, p.err
}

func (p *fakeProvider) Exchange(ctx context.Context, g controlapi.OIDCCodeGrant) (*oidcauth.Grant, error) {
	p.redeemed++
	if p.err != nil {
		return nil, p.err
	}
	return &oidcauth.Grant{}, nil
}

func (p *fakeProvider) DeviceStart(ctx context.Context) (*controlapi.OIDCDeviceStartResponse, error) {
	return &controlapi.OIDCDeviceStartResponse{}, nil
}

func (p *fakeProvider) DevicePoll(ctx context.Context, flow string) (*oidcauth.Grant, error) {
	return p.Exchange(ctx, controlapi.OIDCCodeGrant{})
}

func TestSSOEndpointRefusals(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		retryAfter string
		msg        string
	}{
		{ErrSSOOff, 501, "", "single sign-on (OIDC) is not configured on this controller"},
		{ErrSSORate, 429, "1", "too many sign-in requests from 192.0.2.1; slow down"},
		{fmt.Errorf("%w: discovery: connection refused", oidcauth.ErrIdP), 503, "10", "identity provider unavailable: discovery: connection refused"},
	} {
		w := serve(t, &ssoCore{providerErr: tc.err}, "POST", controlapi.PathOIDCStart, `{}`)
		if w.Code != tc.status || w.Header().Get("Retry-After") != tc.retryAfter || apiError(t, w) != tc.msg {
			t.Errorf("%v: %d %q %q, want %d %q", tc.err, w.Code, w.Header().Get("Retry-After"), w.Body, tc.status, tc.msg)
		}
	}
	w := serve(t, &ssoCore{}, "GET", controlapi.PathOIDCConfig, "")
	if w.Code != 200 || w.Body.String() != "{\n  \"enabled\": false,\n  \"device_flow\": false\n}\n" {
		t.Errorf("config: %d %q", w.Code, w.Body)
	}
}

func TestSSOGrantRequests(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	dev := func(key, name string) string {
		b, _ := json.Marshal(map[string]string{"flow": "f", "device_public_key": key, "device_name": name})
		return string(b)
	}
	good := base64.StdEncoding.EncodeToString(pub)
	for _, path := range []string{controlapi.PathOIDCExchange, controlapi.PathOIDCDevicePoll} {
		for _, tc := range []struct {
			name, body string
			wait       time.Duration
			status     int
			msg        string
		}{
			{"empty", ``, 0, 400, "request body: empty, a JSON object is required"},
			{"no device key", dev("", "laptop"), 0, 400, "device_public_key: base64 of a 32-byte Ed25519 public key is required"},
			{"short key", dev(base64.StdEncoding.EncodeToString(pub[:16]), "laptop"), 0, 400, "device_public_key: base64 of a 32-byte Ed25519 public key is required"},
			{"long name", dev(good, string(make([]byte, 129))), 0, 400, "device_name or os: too long"},
			{"throttled", dev(good, "laptop"), 30 * time.Second, 429, "too many failed sign-ins: wait 30s"},
		} {
			core := &ssoCore{prov: &fakeProvider{}, wait: tc.wait}
			w := serve(t, core, "POST", path, tc.body)
			if w.Code != tc.status || apiError(t, w) != tc.msg {
				t.Errorf("%s %s: %d %q, want %d %q", path, tc.name, w.Code, w.Body, tc.status, tc.msg)
			}
			if tc.wait > 0 && w.Header().Get("Retry-After") != "31" {
				t.Errorf("%s %s: Retry-After %q", path, tc.name, w.Header().Get("Retry-After"))
			}
			if core.prov.redeemed != 0 || core.sessions != 0 {
				t.Errorf("%s %s: a refused request reached the provider", path, tc.name)
			}
		}

		// The provider refuses: counted as a failed sign-in, with its status.
		refused := fmt.Errorf("%w: invalid_grant", oidcauth.ErrRefused)
		core := &ssoCore{prov: &fakeProvider{err: refused}}
		w := serve(t, core, "POST", path, dev(good, "laptop"))
		if w.Code != 403 || apiError(t, w) != "sign-in refused: invalid_grant" || len(core.failed) != 1 || !errors.Is(core.failed[0], oidcauth.ErrRefused) || core.sessions != 0 {
			t.Errorf("%s refused: %d %q, failed %v", path, w.Code, w.Body, core.failed)
		}

		core = &ssoCore{prov: &fakeProvider{}}
		w = serve(t, core, "POST", path, dev(good, "laptop"))
		if w.Code != 200 || core.sessions != 1 {
			t.Errorf("%s: %d %q", path, w.Code, w.Body)
		}
	}

	core := &ssoCore{prov: &fakeProvider{err: oidcauth.ErrPending}}
	w := serve(t, core, "POST", controlapi.PathOIDCDevicePoll, dev(good, "laptop"))
	var pr controlapi.OIDCDevicePollResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &pr) != nil || pr.Status != controlapi.OIDCPending || len(core.failed) != 0 {
		t.Errorf("pending: %d %q", w.Code, w.Body)
	}
	core = &ssoCore{prov: &fakeProvider{}}
	w = serve(t, core, "POST", controlapi.PathOIDCDevicePoll, dev(good, "laptop"))
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &pr) != nil || pr.Status != controlapi.OIDCOK || pr.Login == nil || pr.Login.DeviceID != "laptop" {
		t.Errorf("poll ok: %d %q", w.Code, w.Body)
	}
}
