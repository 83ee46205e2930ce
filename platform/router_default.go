//go:build !linux && !darwin && !windows

package platform

// NewRouter is not available on this system.
func NewRouter(tunName string) (Router, error) { return nil, ErrUnsupported }
