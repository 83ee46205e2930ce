package dnsproxy

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindsToDevice: Linux enforces the interface in the kernel.
const bindsToDevice = true

// bindControl binds a socket to iface (SO_BINDTODEVICE) before bind(2).
func bindControl(iface string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), iface) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to device %s: %w", iface, serr)
		}
		return nil
	}
}
