package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/atomicfile"
	"postern.dev/postern/pki"
)

// File names inside the state directory.
const (
	deviceKeyFile = "device.key"   // PKCS#8 PEM Ed25519, 0600
	sessionFile   = "session.json" // Session, 0600
	policyFile    = "policy.json"  // last controlapi.ClientPolicy (fail static), 0600
	prefsFile     = "prefs.json"   // Prefs, 0600
)

// Session is the signed-in state kept in the state directory.
type Session struct {
	ControllerURL string               `json:"controller_url"`
	CAPEM         string               `json:"ca_pem,omitempty"`
	SessionToken  string               `json:"session_token"`
	ExpiresAt     time.Time            `json:"expires_at"`
	DeviceID      string               `json:"device_id"`
	Principal     controlapi.Principal `json:"principal"`
}

// Prefs are user choices that survive a restart.
type Prefs struct {
	// WantUp is true after `postern up` and false after `postern down`.
	WantUp bool `json:"want_up"`
}

// stateDir reads and writes the daemon's files. Every write is atomic.
type stateDir struct {
	dir string
}

func openStateDir(dir string) (*stateDir, error) {
	if dir == "" {
		return nil, errors.New("state directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	return &stateDir{dir: dir}, nil
}

func (s *stateDir) path(name string) string { return filepath.Join(s.dir, name) }

// deviceKey loads the device key, creating it on first use.
func (s *stateDir) deviceKey() (ed25519.PrivateKey, error) {
	p := s.path(deviceKeyFile)
	b, err := os.ReadFile(p)
	if err == nil {
		k, err := pki.ParseKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("device key %s: %w", p, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("device key %s: %T is not Ed25519", p, k)
		}
		return ek, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read device key: %w", err)
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate device key: %w", err)
	}
	pemb, err := pki.EncodeKeyPEM(k)
	if err != nil {
		return nil, fmt.Errorf("encode device key: %w", err)
	}
	if err := atomicfile.Write(p, pemb, 0o600); err != nil {
		return nil, fmt.Errorf("write device key %s: %w", p, err)
	}
	return k, nil
}

func (s *stateDir) readJSON(name string, v any) (bool, error) {
	b, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", s.path(name), err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("parse %s: %w", s.path(name), err)
	}
	return true, nil
}

func (s *stateDir) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	if err := atomicfile.Write(s.path(name), b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", s.path(name), err)
	}
	return nil
}

func (s *stateDir) remove(name string) error {
	err := os.Remove(s.path(name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", s.path(name), err)
	}
	return nil
}

func (s *stateDir) session() (*Session, error) {
	var sess Session
	ok, err := s.readJSON(sessionFile, &sess)
	if err != nil || !ok {
		return nil, err
	}
	return &sess, nil
}

func (s *stateDir) policy() (*controlapi.ClientPolicy, error) {
	var p controlapi.ClientPolicy
	ok, err := s.readJSON(policyFile, &p)
	if err != nil || !ok {
		return nil, err
	}
	return &p, nil
}

func (s *stateDir) prefs() Prefs {
	var p Prefs
	_, _ = s.readJSON(prefsFile, &p)
	return p
}
