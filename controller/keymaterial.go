// The controller's key material in its data directory: the deployment CA,
// the HTTPS server certificate, the admin token and TURN secret, and the
// token-signing keys with their rotation.

package controller

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/atomicfile"
	"postern.dev/postern/pki"
)

// loadOrCreateSecret reads the secret in path, or writes a new one (prefix
// and 32 random bytes in hex) when the file does not exist.
func loadOrCreateSecret(path, prefix string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < 32 {
			return "", fmt.Errorf("%s: secret too short", path)
		}
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	s := prefix + api.RandomHex(32)
	if err := atomicfile.Write(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return s, nil
}

// loadOrCreateCA loads the deployment CA, or creates it on first start.
func (c *Controller) loadOrCreateCA() error {
	certPath, keyPath := filepath.Join(c.cfg.DataDir, "ca.pem"), filepath.Join(c.cfg.DataDir, "ca-key.pem")
	if _, err := os.Stat(certPath); err == nil {
		ca, err := pki.LoadCA(certPath, keyPath)
		if err != nil {
			return fmt.Errorf("load deployment CA: %w", err)
		}
		c.ca = ca
		return nil
	}
	ca, err := pki.NewCA("Postern deployment CA " + c.host)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKeyPEM(ca.Key)
	if err != nil {
		return fmt.Errorf("encode CA key: %w", err)
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	if err := atomicfile.Write(certPath, pki.EncodeCertPEM(ca.Cert), 0o644); err != nil {
		return fmt.Errorf("write CA certificate: %w", err)
	}
	c.ca = ca
	return nil
}

// loadOrCreateTLS loads the server certificate, or issues a new one when it
// is missing, expires within 30 days, or does not name the public host (and
// the advertised one).
func (c *Controller) loadOrCreateTLS() error {
	certPath, keyPath := filepath.Join(c.cfg.DataDir, "tls.pem"), filepath.Join(c.cfg.DataDir, "tls-key.pem")
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && pair.Leaf != nil {
		if pair.Leaf.VerifyHostname(c.host) == nil && (c.advHost == "" || pair.Leaf.VerifyHostname(c.advHost) == nil) && time.Until(pair.Leaf.NotAfter) > 30*24*time.Hour &&
			pair.Leaf.CheckSignatureFrom(c.ca.Cert) == nil {
			pair.Certificate = append(pair.Certificate, c.ca.Cert.Raw)
			c.tlsCert = pair
			return nil
		}
	}
	key, err := generateECKey()
	if err != nil {
		return err
	}
	hosts := []string{c.host}
	if c.advHost != "" && c.advHost != c.host {
		hosts = append(hosts, c.advHost)
	}
	leaf, err := c.ca.IssueServer(hosts, key.Public(), 397*24*time.Hour)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write TLS key: %w", err)
	}
	if err := atomicfile.Write(certPath, pki.EncodeCertPEM(leaf), 0o644); err != nil {
		return fmt.Errorf("write TLS certificate: %w", err)
	}
	c.tlsCert = tls.Certificate{Certificate: [][]byte{leaf.Raw, c.ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}
	return nil
}

// signingKey is one token-signing key as token-keys.json stores it, newest
// first.
type signingKey struct {
	KID     string    `json:"kid"`
	Private string    `json:"private"` // base64 of the 64-byte Ed25519 private key
	Created time.Time `json:"created"`
}

// keysPath is where the token-signing keys are kept.
func (c *Controller) keysPath() string { return filepath.Join(c.cfg.DataDir, "token-keys.json") }

// loadOrCreateSigningKeys installs the stored signing keys, or makes the
// first one.
func (c *Controller) loadOrCreateSigningKeys() error {
	var keys []signingKey
	b, err := os.ReadFile(c.keysPath())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &keys); err != nil {
			return fmt.Errorf("read token signing keys: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("read token signing keys: %w", err)
	}
	if len(keys) == 0 {
		return c.RotateSigningKey()
	}
	return c.installKeys(keys)
}

// RotateSigningKey makes a new token-signing key current. The previous keys
// stay in the JWKS (at most three) so tokens they signed keep verifying.
//
// Once the store is open (every rotation but the very first one at
// startup) the new set is a commit, on SQLite as on PostgreSQL: the
// revision moves, so every push stream, resumed ones included, sends the new
// JWKS at once instead of at the next policy change.
func (c *Controller) RotateSigningKey() error {
	if c.store != nil {
		return c.rotateSharedSigningKey()
	}
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	var keys []signingKey
	if b, err := os.ReadFile(c.keysPath()); err == nil {
		if err := json.Unmarshal(b, &keys); err != nil {
			return fmt.Errorf("read token signing keys: %w", err)
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate token signing key: %w", err)
	}
	kid := pki.KeyThumbprint(priv.Public().(ed25519.PublicKey))[:16]
	keys = append([]signingKey{{KID: kid, Private: base64.StdEncoding.EncodeToString(priv), Created: time.Now().UTC()}}, keys...)
	if len(keys) > 3 {
		keys = keys[:3]
	}
	b, _ := json.MarshalIndent(keys, "", "  ")
	if err := atomicfile.Write(c.keysPath(), b, 0o600); err != nil {
		return fmt.Errorf("write token signing keys: %w", err)
	}
	return c.installKeys(keys)
}

// installKeys makes keys[0] the signer and publishes all of keys as the JWKS.
func (c *Controller) installKeys(keys []signingKey) error {
	set := ctoken.JWKS{}
	var signer *ctoken.Signer
	for i, k := range keys {
		raw, err := base64.StdEncoding.DecodeString(k.Private)
		if err != nil || len(raw) != ed25519.PrivateKeySize {
			return fmt.Errorf("token signing key %q is malformed", k.KID)
		}
		priv := ed25519.PrivateKey(raw)
		set.Keys = append(set.Keys, ctoken.PublicJWK(k.KID, priv.Public().(ed25519.PublicKey)))
		if i == 0 {
			signer = &ctoken.Signer{Issuer: c.issuer, KeyID: k.KID, Key: priv}
		}
	}
	b, _ := json.Marshal(set)
	raw := json.RawMessage(b)
	c.signer.Store(signer)
	c.jwks.Store(&raw)
	return nil
}
