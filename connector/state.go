package connector

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/atomicfile"
	"postern.dev/postern/pki"
)

// Files in the state directory (all mode 0600, the directory 0700).
const (
	stateFile    = "connector.json"
	keyFile      = "identity-key.pem"
	certFile     = "identity-cert.pem"
	caFile       = "ca.pem"
	policyFile   = "policy.json"
	resetKeyFile = "quic-reset-key"
)

// State is the enrolled identity of a connector, kept in its state directory.
type State struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Network       string    `json:"network,omitempty"`
	ControllerURL string    `json:"controller_url"`
	CAFingerprint string    `json:"ca_fingerprint"`
	NotAfter      time.Time `json:"not_after"`

	key  crypto.Signer
	cert *x509.Certificate
	ca   *x509.Certificate
}

// Enrolled reports whether dir holds a connector credential.
func Enrolled(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, stateFile))
	return err == nil
}

// LoadState reads the credential from dir.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotEnrolled)
	}
	if err != nil {
		return nil, fmt.Errorf("read connector state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.ID == "" || st.ControllerURL == "" {
		return nil, fmt.Errorf("%s: missing id or controller URL", filepath.Join(dir, stateFile))
	}
	kb, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("read connector key: %w", err)
	}
	if st.key, err = pki.ParseKeyPEM(kb); err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	cb, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, fmt.Errorf("read connector certificate: %w", err)
	}
	if st.cert, err = pki.ParseCertPEM(cb); err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	ab, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("read controller CA: %w", err)
	}
	if st.ca, err = pki.ParseCertPEM(ab); err != nil {
		return nil, fmt.Errorf("%s: %w", caFile, err)
	}
	if !pki.DigestEqual(pki.CertDigest(st.ca.Raw), st.CAFingerprint) {
		return nil, fmt.Errorf("%s does not match the CA fingerprint recorded at enrollment", caFile)
	}
	return &st, nil
}

// save writes the whole credential atomically (key and certificate first, so
// that a crash never leaves a state file pointing at a missing key).
func (st *State) save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	kp, err := pki.EncodeKeyPEM(st.key)
	if err != nil {
		return fmt.Errorf("encode connector key: %w", err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{keyFile, kp},
		{certFile, pki.EncodeCertPEM(st.cert)},
		{caFile, pki.EncodeCertPEM(st.ca)},
	}
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	files = append(files, struct {
		name string
		data []byte
	}{stateFile, append(js, '\n')})
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// tlsCertificate returns the enrollment credential as a TLS client certificate.
func (st *State) tlsCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{st.cert.Raw}, PrivateKey: st.key, Leaf: st.cert}
}

// EnrollOptions tune Enroll.
type EnrollOptions struct {
	Hostname string        // reported to the controller; default os.Hostname
	Timeout  time.Duration // whole enrollment; default 30 s
}

// Enroll exchanges a printed enrollment token for a credential and stores it
// in dir. The controller is verified through the CA fingerprint the token
// carries: nothing is trusted on first use. If dir already holds a credential
// Enroll returns it unchanged.
func Enroll(ctx context.Context, dir, token string, opts EnrollOptions) (*State, error) {
	if Enrolled(dir) {
		return LoadState(dir)
	}
	et, err := controlapi.ParseEnrollmentToken(token)
	if err != nil {
		return nil, err
	}
	if et.Kind != "connector" {
		return nil, fmt.Errorf("%w (it is a %q token)", ErrWrongTokenKind, et.Kind)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate connector key: %w", err)
	}
	resp, ca, err := et.Enroll(ctx, controlapi.PathEnrollConnector, pub, opts.Hostname, opts.Timeout)
	if err != nil {
		var se *controlapi.StatusError
		if errors.As(err, &se) && se.StatusCode >= 400 && se.StatusCode < 500 {
			return nil, fmt.Errorf("%w: %s", ErrEnrollRefused, se.Message)
		}
		return nil, err
	}
	st, err := stateFromResponse(resp, key, et.ControllerURL, ca)
	if err != nil {
		return nil, err
	}
	if err := st.save(dir); err != nil {
		return nil, err
	}
	return st, nil
}

// stateFromResponse checks an enrollment or renewal answer: the certificate
// must carry our key and chain to the pinned CA.
func stateFromResponse(resp controlapi.EnrollResponse, key crypto.Signer, controllerURL string, ca *x509.Certificate) (*State, error) {
	if resp.ID == "" {
		return nil, errors.New("controller answered without a connector id")
	}
	cert, err := pki.ParseCertPEM([]byte(resp.CertificatePEM))
	if err != nil {
		return nil, fmt.Errorf("controller certificate: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("controller issued a certificate for another key")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pki.CAPool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("controller certificate does not chain to the pinned CA: %w", err)
	}
	notAfter := resp.NotAfter
	if notAfter.IsZero() {
		notAfter = cert.NotAfter
	}
	return &State{
		ID: resp.ID, Name: resp.Name, Network: resp.Network,
		ControllerURL: controllerURL, CAFingerprint: pki.CertDigest(ca.Raw), NotAfter: notAfter,
		key: key, cert: cert, ca: ca,
	}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
