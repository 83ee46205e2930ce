package controlapi

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"postern.dev/postern/pki"
	"postern.dev/postern/version"
)

// Enroll exchanges the token's one-time secret for a credential bound to
// pub, as connectors and relays do on their first start. It first fetches
// the controller's CA and accepts it only when it matches the fingerprint
// the token carries (nothing is trusted on first use), then posts the
// EnrollRequest to path over a client that trusts only that CA. timeout
// bounds the CA fetch and the call each; hostname is reported to the
// controller. It returns the answer and the pinned CA; a refusal by the
// controller is a *StatusError in the chain.
func (t EnrollmentToken) Enroll(ctx context.Context, path string, pub crypto.PublicKey, hostname string, timeout time.Duration) (EnrollResponse, *x509.Certificate, error) {
	var resp EnrollResponse
	u, err := url.Parse(t.ControllerURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return resp, nil, fmt.Errorf("%w: controller URL %q is not an https URL", ErrBadEnrollmentToken, t.ControllerURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	ca, err := pki.FetchCAByFingerprint(addr, u.Hostname(), t.CAFingerprint, timeout)
	if err != nil {
		return resp, nil, fmt.Errorf("verify controller %s: %w", u.Host, err)
	}
	pubPEM, err := PublicKeyPEM(pub)
	if err != nil {
		return resp, nil, err
	}
	api, err := NewClient(ClientConfig{URL: t.ControllerURL, Roots: pki.CAPool(ca), CallTimeout: timeout})
	if err != nil {
		return resp, nil, fmt.Errorf("%w: %v", ErrBadEnrollmentToken, err)
	}
	defer api.Close()
	req := EnrollRequest{Secret: t.Secret, PublicKeyPEM: pubPEM, Version: version.Version, Hostname: hostname}
	if err := api.Call(ctx, http.MethodPost, path, req, &resp); err != nil {
		return resp, nil, fmt.Errorf("enroll with %s: %w", u.Host, err)
	}
	return resp, ca, nil
}

// PublicKeyPEM is the PEM of pub's PKIX encoding, the form EnrollRequest
// and RenewRequest carry.
func PublicKeyPEM(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}
