//go:build !linux

package dnsproxy

import "syscall"

// bindsToDevice: elsewhere Listen filters by source address instead.
const bindsToDevice = false

func bindControl(string) func(network, address string, c syscall.RawConn) error { return nil }
