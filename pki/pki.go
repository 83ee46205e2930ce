// Package pki holds Postern's certificate and key helpers: the deployment CA,
// server and component certificates, the connector's self-signed certificate,
// SHA-256 digests of certificates and RFC 7638 key thumbprints, and TLS
// configurations that pin a CA by fingerprint or a peer by digest.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// ErrDigestMismatch means a peer's certificate is not the one that was expected.
var ErrDigestMismatch = errors.New("certificate digest mismatch")

// CertDigest returns the lowercase hex SHA-256 of a certificate's DER bytes.
// Connectors report it in heartbeats; Connection Tokens carry it.
func CertDigest(der []byte) string {
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// DigestEqual compares two hex digests in constant time, ignoring case.
func DigestEqual(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	return len(a) == 64 && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// KeyThumbprint returns the RFC 7638 JWK thumbprint (base64url SHA-256) of an
// Ed25519 public key. It is the value of cnf.jkt in a Connection Token.
func KeyThumbprint(pub ed25519.PublicKey) string {
	x := base64.RawURLEncoding.EncodeToString(pub)
	canon := `{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`
	s := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

// CertKeyThumbprint returns KeyThumbprint of an Ed25519 certificate's key.
func CertKeyThumbprint(cert *x509.Certificate) (string, error) {
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return "", fmt.Errorf("certificate key is %T, want Ed25519", cert.PublicKey)
	}
	return KeyThumbprint(pub), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return n
}

// CA is a certificate authority: the deployment CA of a controller.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed ECDSA P-256 CA valid for ten years.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Postern"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Fingerprint is the CA's SHA-256 fingerprint (CertDigest of its DER).
func (ca *CA) Fingerprint() string { return CertDigest(ca.Cert.Raw) }

// IssueServer issues a TLS server certificate for the given DNS names or IPs.
func (ca *CA) IssueServer(hosts []string, pub crypto.PublicKey, validity time.Duration) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, pub)
}

// IssueClient issues a client-auth certificate, used as the long-lived,
// rotating credential of an enrolled connector or relay. commonName is
// "connector:<id>" or "relay:<id>".
func (ca *CA) IssueClient(commonName string, pub crypto.PublicKey, validity time.Duration) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-5 * time.Minute),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, pub)
}

func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// SelfSigned makes a self-signed certificate for key (the connector's QUIC
// identity, or a client's device certificate).
func SelfSigned(key ed25519.PrivateKey, commonName string, validity time.Duration) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-5 * time.Minute),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{commonName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// EncodeCertPEM encodes a certificate as PEM.
func EncodeCertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodeKeyPEM encodes a private key as PKCS#8 PEM.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertPEM parses the first certificate in PEM data.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ParseKeyPEM parses a PKCS#8 private key in PEM.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM private key found")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key type %T cannot sign", k)
	}
	return s, nil
}

// LoadCA reads a CA certificate and key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := ParseKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CAPool returns a pool holding only cert.
func CAPool(cert *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p
}

// PinnedPeerConfig returns a TLS 1.3 client configuration that accepts the
// server only if the SHA-256 digest of its leaf certificate equals want (for
// any chain, self-signed included). Pinning happens in VerifyConnection, which
// also runs on resumed sessions; session tickets are off regardless.
func PinnedPeerConfig(want func() []string, serverName string, alpn []string) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ServerName:             serverName,
		NextProtos:             alpn,
		InsecureSkipVerify:     true, // replaced by the digest pin below
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer sent no certificate")
			}
			got := CertDigest(cs.PeerCertificates[0].Raw)
			for _, w := range want() {
				if DigestEqual(got, w) {
					return nil
				}
			}
			return fmt.Errorf("%w: peer certificate sha256 %s is not in the Connection Token", ErrDigestMismatch, got)
		},
	}
}

// FetchCAByFingerprint connects to a controller whose CA is not yet known,
// takes the chain it presents, and returns the CA certificate whose SHA-256
// fingerprint equals want. The chain's leaf must verify against that CA for
// host. This is how enrollment avoids trust on first use.
func FetchCAByFingerprint(addr, host, want string, timeout time.Duration) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         host,
		InsecureSkipVerify: true, // verified below against the pinned CA
	})
	if err != nil {
		return nil, fmt.Errorf("connect to controller %s: %w", addr, err)
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	for _, c := range chain {
		if DigestEqual(CertDigest(c.Raw), want) {
			opts := x509.VerifyOptions{DNSName: host, Roots: CAPool(c)}
			if ip := net.ParseIP(host); ip != nil {
				opts.DNSName = host
			}
			if _, err := chain[0].Verify(opts); err != nil {
				return nil, fmt.Errorf("controller certificate does not verify against the pinned CA: %w", err)
			}
			return c, nil
		}
	}
	return nil, fmt.Errorf("controller %s: %w: no certificate in its chain has CA fingerprint %s", addr, ErrDigestMismatch, want)
}
