//go:build !windows

package client

// secureStateDir: elsewhere the directory's mode (0700, set when it is
// created) protects it.
func secureStateDir(dir string) error { return nil }
