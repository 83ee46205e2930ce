// Package ctoken issues and validates Connection Tokens: EdDSA-signed JWTs that
// the controller gives a signed-in device for one connector. It is the single
// validation path used by every verifier (connector, client): EdDSA only,
// issuer, audience and expiry required, at most 30 s of leeway, and a bound on
// the token's size checked before any parsing.
package ctoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Limits.
const (
	MaxTokenSize = 4096
	Leeway       = 30 * time.Second
	DefaultTTL   = 10 * time.Minute
)

// Sentinel errors (wrapped with detail).
var (
	ErrTooLarge     = errors.New("token too large")
	ErrInvalid      = errors.New("invalid connection token")
	ErrUnknownKey   = errors.New("token signed with an unknown key")
	ErrWrongDigest  = errors.New("token is for another connector certificate")
	ErrWrongBinding = errors.New("token is bound to another device key")
)

// Confirmation is the RFC 7800 cnf claim: jkt is the RFC 7638 thumbprint of the
// device's Ed25519 key (see pki.KeyThumbprint).
type Confirmation struct {
	JKT string `json:"jkt"`
}

// Claims of a Connection Token.
type Claims struct {
	// Principal kind ("user" or "service_account") and display name; Subject
	// (sub) is the principal id.
	PrincipalKind string `json:"pkind"`
	PrincipalName string `json:"pname,omitempty"`
	// Groups the principal belonged to at issue time (informational: the
	// connector decides with its own policy copy).
	Groups []string `json:"groups,omitempty"`
	// Device id.
	Device string `json:"dev"`
	// Hex SHA-256 of the connector's current certificate DER.
	ConnectorCertSHA256 string       `json:"ccs"`
	Cnf                 Confirmation `json:"cnf"`
	// Access claims (docs/access.md). MFAAt is the Unix time of the
	// device's last second factor (0: none); AMR lists the methods of it
	// ("otp"). Posture names the posture profiles the device satisfied at
	// issue. Grants maps resource id to the Unix end of an approved access
	// request.
	MFAAt   int64            `json:"mfa_at,omitempty"`
	AMR     []string         `json:"amr,omitempty"`
	Posture []string         `json:"posture,omitempty"`
	Grants  map[string]int64 `json:"grants,omitempty"`
	jwt.RegisteredClaims
}

// Signer issues tokens with the controller's token-signing key.
type Signer struct {
	Issuer string
	KeyID  string
	Key    ed25519.PrivateKey
}

// NewJTI returns a random unique token id.
func NewJTI() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// Issue signs c. It fills iss, iat, nbf and jti; c must carry sub, aud, exp.
func (s *Signer) Issue(c Claims) (string, error) {
	now := time.Now()
	c.Issuer = s.Issuer
	c.IssuedAt = jwt.NewNumericDate(now)
	c.NotBefore = jwt.NewNumericDate(now.Add(-Leeway))
	if c.ID == "" {
		c.ID = NewJTI()
	}
	if c.ExpiresAt == nil {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(DefaultTTL))
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = s.KeyID
	return t.SignedString(s.Key)
}

// KeySet holds the controller's token-verification keys by kid. It is safe for
// concurrent use and can be replaced when keys rotate.
type KeySet struct {
	mu   sync.RWMutex
	keys map[string]ed25519.PublicKey
}

// NewKeySet returns a key set holding keys.
func NewKeySet(keys map[string]ed25519.PublicKey) *KeySet {
	ks := &KeySet{}
	ks.Replace(keys)
	return ks
}

// Replace swaps the whole set.
func (ks *KeySet) Replace(keys map[string]ed25519.PublicKey) {
	m := make(map[string]ed25519.PublicKey, len(keys))
	for k, v := range keys {
		m[k] = v
	}
	ks.mu.Lock()
	ks.keys = m
	ks.mu.Unlock()
}

// Get returns the key with id kid.
func (ks *KeySet) Get(kid string) (ed25519.PublicKey, bool) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	k, ok := ks.keys[kid]
	return k, ok
}

// Verifier validates tokens for one audience.
type Verifier struct {
	Issuer string
	Keys   *KeySet
	Now    func() time.Time // nil: time.Now
}

// Verify validates token for audience and returns its claims. It refuses any
// alg other than EdDSA, an unknown kid, a wrong iss or aud, a missing or passed
// exp, a missing cnf, device, sub or certificate digest.
func (v *Verifier) Verify(token, audience string) (*Claims, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(token))
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(v.Issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
	}
	if v.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(v.Now))
	}
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := v.Keys.Get(kid)
		if !ok {
			return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
		}
		return k, nil
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch {
	case c.Subject == "":
		return nil, fmt.Errorf("%w: missing sub", ErrInvalid)
	case c.Device == "":
		return nil, fmt.Errorf("%w: missing dev", ErrInvalid)
	case c.Cnf.JKT == "":
		return nil, fmt.Errorf("%w: missing cnf.jkt", ErrInvalid)
	case len(c.ConnectorCertSHA256) != 64:
		return nil, fmt.Errorf("%w: missing or malformed ccs", ErrInvalid)
	case c.ID == "":
		return nil, fmt.Errorf("%w: missing jti", ErrInvalid)
	}
	return &c, nil
}

// JWK is one Ed25519 public key in a JWKS (RFC 8037).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// JWKS is the document served at /.well-known/jwks.json.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// PublicJWK returns the JWK of an Ed25519 public key.
func PublicJWK(kid string, pub ed25519.PublicKey) JWK {
	return JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub), Kid: kid, Use: "sig", Alg: "EdDSA"}
}

// ParseJWKS decodes a JWKS and returns its Ed25519 keys by kid.
func ParseJWKS(data []byte) (map[string]ed25519.PublicKey, error) {
	var set JWKS
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	out := map[string]ed25519.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Kid == "" {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("parse JWKS: key %q: bad x", k.Kid)
		}
		out[k.Kid] = ed25519.PublicKey(x)
	}
	if len(out) == 0 {
		return nil, errors.New("parse JWKS: no Ed25519 keys")
	}
	return out, nil
}
