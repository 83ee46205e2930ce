//go:build !linux

package platform

// removeStaleRoutes: utun (macOS) and wintun (Windows) interfaces, and the
// routes on them, are removed when the process that created them exits.
func removeStaleRoutes(tunName string) (int, error) { return 0, nil }
