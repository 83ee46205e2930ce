package session

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// RevokedKeySuffix is appended to device.key when the controller refuses the
// key for good; the file is kept for the record, never used again.
const RevokedKeySuffix = ".revoked"

// isRevokedDeviceKey reports whether a sign-in failed because an
// administrator revoked this device (the controller answers 403 "this device
// key was revoked ...").
func isRevokedDeviceKey(err error) bool {
	return errors.Is(err, ErrForbidden) && strings.Contains(err.Error(), "device key was revoked")
}

// rotateRevokedKey replaces a device key the controller revoked, so that a
// new sign-in (which needs the user's credentials, or the service key)
// enrolls this machine as a new device. It runs only while signed out and
// while nothing else uses the key (signed out: no tunnel). The old key is kept
// as device.key.revoked.
func (m *Manager) rotateRevokedKey() (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.info != nil {
		return false, nil
	}
	p := m.dir.Path(DeviceKeyFile)
	if err := os.Rename(p, p+RevokedKeySuffix); err != nil {
		return false, fmt.Errorf("set the revoked device key aside: %w", err)
	}
	key, err := m.dir.deviceKey()
	if err != nil {
		return false, err
	}
	if err := m.setKeyLocked(key); err != nil {
		return false, err
	}
	m.log.Warn("an administrator revoked this device; made a new device key", "revoked_key", p+RevokedKeySuffix)
	return true, nil
}
