package session

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

// File names inside the state directory that the session owns. The daemon
// keeps its own files (prefs.json) in the same directory.
const (
	DeviceKeyFile = "device.key"   // PKCS#8 PEM Ed25519, 0600
	SessionFile   = "session.json" // Info, 0600
	PolicyFile    = "policy.json"  // last controlapi.ClientPolicy (fail static), 0600
)

// Info is the signed-in state kept in the state directory.
type Info struct {
	ControllerURL string               `json:"controller_url"`
	CAPEM         string               `json:"ca_pem,omitempty"`
	SessionToken  string               `json:"session_token"`
	ExpiresAt     time.Time            `json:"expires_at"`
	DeviceID      string               `json:"device_id"`
	Principal     controlapi.Principal `json:"principal"`
}

// StateDir reads and writes the files of the state directory. Every write
// is atomic.
type StateDir struct {
	dir string
}

// OpenStateDir creates dir (0700) when missing.
func OpenStateDir(dir string) (*StateDir, error) {
	if dir == "" {
		return nil, errors.New("state directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	return &StateDir{dir: dir}, nil
}

// Path is the full name of a file in the directory.
func (s *StateDir) Path(name string) string { return filepath.Join(s.dir, name) }

// deviceKey loads the device key, creating it on first use.
func (s *StateDir) deviceKey() (ed25519.PrivateKey, error) {
	p := s.Path(DeviceKeyFile)
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

// ReadJSON decodes file name into v; false when it does not exist.
func (s *StateDir) ReadJSON(name string, v any) (bool, error) {
	b, err := os.ReadFile(s.Path(name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", s.Path(name), err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("parse %s: %w", s.Path(name), err)
	}
	return true, nil
}

// WriteJSON writes v to file name (0600), atomically.
func (s *StateDir) WriteJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	if err := atomicfile.Write(s.Path(name), b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", s.Path(name), err)
	}
	return nil
}

// Remove deletes file name; a missing file is not an error.
func (s *StateDir) Remove(name string) error {
	err := os.Remove(s.Path(name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", s.Path(name), err)
	}
	return nil
}

func (s *StateDir) session() (*Info, error) {
	var sess Info
	ok, err := s.ReadJSON(SessionFile, &sess)
	if err != nil || !ok {
		return nil, err
	}
	return &sess, nil
}

func (s *StateDir) policy() (*controlapi.ClientPolicy, error) {
	var p controlapi.ClientPolicy
	ok, err := s.ReadJSON(PolicyFile, &p)
	if err != nil || !ok {
		return nil, err
	}
	return &p, nil
}
