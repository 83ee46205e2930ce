//go:build !windows

package client

import "context"

// IsService is false outside Windows (systemd and launchd run posternd as a
// plain process).
func IsService() bool { return false }

// RunService does nothing outside Windows: it returns false.
func RunService(name string, run func(ctx context.Context) error) (bool, error) { return false, nil }
