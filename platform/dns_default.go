//go:build !linux && !darwin && !windows

package platform

// NewOSConfigurator is not available on this system.
func NewOSConfigurator(tunName, stateDir string) (OSConfigurator, error) {
	return nil, ErrUnsupported
}

func restoreOS(st *dnsState) error { return ErrUnsupported }
