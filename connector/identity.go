package connector

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	"postern.dev/postern/pki"
	"postern.dev/postern/wire"
)

// servingCert is one self-signed QUIC certificate and when it stopped being current.
type servingCert struct {
	cert    *tls.Certificate
	digest  string
	retired time.Time // zero while current
}

// certStore holds the current certificate and the previous ones that still
// serve during a rotation, newest first.
type certStore struct {
	name     string
	validity time.Duration
	overlap  time.Duration

	mu    sync.RWMutex
	certs []*servingCert
}

func newCertStore(name string, validity, overlap time.Duration) (*certStore, error) {
	s := &certStore{name: name, validity: validity, overlap: overlap}
	if err := s.rotate(time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

// rotate makes a fresh key and certificate current; the previous ones keep
// serving for the overlap.
func (s *certStore) rotate(now time.Time) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate QUIC key: %w", err)
	}
	c, err := pki.SelfSigned(key, s.name, s.validity)
	if err != nil {
		return err
	}
	sc := &servingCert{cert: &c, digest: pki.CertDigest(c.Certificate[0])}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.certs {
		if old.retired.IsZero() {
			old.retired = now
		}
	}
	s.certs = append([]*servingCert{sc}, s.certs...)
	s.pruneLocked(now)
	return nil
}

// prune drops previous certificates whose overlap has passed.
func (s *certStore) prune(now time.Time) {
	s.mu.Lock()
	s.pruneLocked(now)
	s.mu.Unlock()
}

func (s *certStore) pruneLocked(now time.Time) {
	kept := s.certs[:0]
	for _, c := range s.certs {
		if c.retired.IsZero() || now.Sub(c.retired) < s.overlap {
			kept = append(kept, c)
		}
	}
	for i := len(kept); i < len(s.certs); i++ {
		s.certs[i] = nil
	}
	s.certs = kept
}

// digests returns the digests of every serving certificate, current first.
func (s *certStore) digests() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, len(s.certs))
	for i, c := range s.certs {
		out[i] = c.digest
	}
	return out
}

// current returns the current certificate's digest.
func (s *certStore) current() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.certs[0].digest
}

// serving reports whether digest is one of the serving certificates.
func (s *certStore) serving(digest string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.certs {
		if pki.DigestEqual(c.digest, digest) {
			return true
		}
	}
	return false
}

// lookup returns the certificate a client asked for with its TLS server name
// (wire.ServerName of the digest in its token), or the current one.
func (s *certStore) lookup(serverName string) *servingCert {
	prefix := strings.ToLower(strings.TrimSuffix(strings.ToLower(serverName), wire.ServerNameSuffix))
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(prefix) == 32 && strings.HasSuffix(strings.ToLower(serverName), wire.ServerNameSuffix) {
		for _, c := range s.certs {
			if strings.HasPrefix(c.digest, prefix) {
				return c
			}
		}
	}
	return s.certs[0]
}

// getCertificate is the tls.Config hook.
func (s *certStore) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.lookup(hello.ServerName).cert, nil
}
