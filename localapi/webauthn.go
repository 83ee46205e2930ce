package localapi

import (
	"context"
	"net/http"
	"net/url"

	"postern.dev/postern/controlapi"
)

// WebAuthn second factor through the browser (docs/access.md). The daemon
// forwards to the controller with its session:
//
//	POST /v1/mfa/webauthn         controlapi.WebAuthnBegin -> controlapi.WebAuthnCeremony (with the page URL)
//	GET  /v1/mfa/webauthn/{id}    -> controlapi.WebAuthnCeremony (state; MFA status once done)
//	POST /v1/mfa/webauthn/remove  -> 204 (all security keys; needs a recent step-up)
const PathMFAWebAuthn = "/v1/mfa/webauthn"

// WebAuthnBegin starts a ceremony: registering a security key (register)
// or stepping up with one. The answer's URL is the page to open.
func (c *Client) WebAuthnBegin(ctx context.Context, register bool) (controlapi.WebAuthnCeremony, error) {
	var out controlapi.WebAuthnCeremony
	err := c.do(ctx, http.MethodPost, PathMFAWebAuthn, controlapi.WebAuthnBegin{Register: register}, &out)
	return out, err
}

// WebAuthnCeremony returns the state of ceremony id.
func (c *Client) WebAuthnCeremony(ctx context.Context, id string) (controlapi.WebAuthnCeremony, error) {
	var out controlapi.WebAuthnCeremony
	err := c.do(ctx, http.MethodGet, PathMFAWebAuthn+"/"+url.PathEscape(id), nil, &out)
	return out, err
}

// WebAuthnRemove removes the user's security keys.
func (c *Client) WebAuthnRemove(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, PathMFAWebAuthn+"/remove", struct{}{}, nil)
}
