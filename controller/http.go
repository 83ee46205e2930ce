package controller

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"postern.dev/postern/controller/api"
)

// Handler returns the controller's HTTP handler (used by Serve; exposed for
// embedding behind another TLS terminator, which must then pass client
// certificates through r.TLS).
func (c *Controller) Handler() http.Handler {
	c.muxOnce.Do(c.buildHandler)
	return c.handler
}

func (c *Controller) buildHandler() {
	mux := http.NewServeMux()
	api.New(c, c.log).Routes(mux)
	c.consoleServer(mux).Routes(mux)
	c.mux = mux
	c.handler = c.instrument(api.Middleware(mux, c.log, c.limiter.Allow))
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// ComponentIdentity returns the kind ("connector"/"relay") and id of an
// mTLS caller, checking that the certificate was issued for the key the
// component enrolled (or renewed) with (api.Auth).
func (c *Controller) ComponentIdentity(r *http.Request) (kind, id string, err error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return "", "", errors.New("a client certificate issued at enrollment is required")
	}
	cert := r.TLS.PeerCertificates[0]
	kind, id, ok := strings.Cut(cert.Subject.CommonName, ":")
	if !ok || (kind != KindConnector && kind != KindRelay) || id == "" {
		return "", "", fmt.Errorf("client certificate %q is not a connector or relay credential", cert.Subject.CommonName)
	}
	m := c.model()
	var keyPEM string
	switch kind {
	case KindConnector:
		cn, ok := m.Connectors[id]
		if !ok {
			return "", "", fmt.Errorf("%w: connector %s no longer exists", ErrUnknownComponent, id)
		}
		keyPEM = cn.PublicKeyPEM
	case KindRelay:
		rl, ok := m.Relays[id]
		if !ok {
			return "", "", fmt.Errorf("%w: relay %s no longer exists", ErrUnknownComponent, id)
		}
		keyPEM = rl.PublicKeyPEM
	}
	der, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil || keyPEM == "" || string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})) != keyPEM {
		return "", "", fmt.Errorf("%w: %s %s: certificate is for a key that is no longer enrolled", ErrUnknownComponent, kind, id)
	}
	return kind, id, nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
