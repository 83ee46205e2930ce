package client

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// checkPeer admits root, the daemon's own uid, and members (by primary gid)
// of the socket's group when that is not root's group.
func checkPeer(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("local API: not a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("local API: peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("local API: peer credentials: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("local API: peer credentials: %w", cerr)
	}
	if cred.Uid == 0 || int(cred.Uid) == os.Geteuid() {
		return nil
	}
	if la, ok := uc.LocalAddr().(*net.UnixAddr); ok {
		var st syscall.Stat_t
		if syscall.Stat(la.Name, &st) == nil && st.Gid != 0 && st.Gid == cred.Gid {
			return nil
		}
	}
	return fmt.Errorf("local API: uid %d may not control this daemon", cred.Uid)
}
