package platform

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// resolvConfPath is the file the resolv.conf configurator rewrites.
const resolvConfPath = "/etc/resolv.conf"

// NewOSConfigurator returns the DNS configurator for this machine: through
// systemd-resolved (split DNS on the TUN link) when resolved manages
// /etc/resolv.conf, else by rewriting /etc/resolv.conf. stateDir keeps what
// is needed to undo the change after a crash; a change a crashed run left
// behind is undone first (RestoreAfterCrash), so the original is what gets
// saved.
func NewOSConfigurator(tunName, stateDir string) (OSConfigurator, error) {
	if err := takeOverDNSState(stateDir); err != nil {
		return nil, err
	}
	if resolvedManaged() {
		c, err := newResolved(tunName, stateDir)
		if err == nil {
			return c, nil
		}
		// resolved manages the file but cannot be driven: rewriting the
		// file would be undone by resolved, so say so.
		return nil, fmt.Errorf("%w: /etc/resolv.conf is managed by systemd-resolved but it cannot be configured over D-Bus: %w", ErrDNSConfig, err)
	}
	return newResolvConf(resolvConfPath, stateDir)
}

// resolvedManaged reports whether systemd-resolved owns /etc/resolv.conf
// for this process: the file is its stub (a link into /run/systemd/resolve
// or a file naming 127.0.0.53), and this process shares the network
// namespace of pid 1 (inside "ip netns exec" the file is the namespace's own
// and resolved, living in the host namespace, has nothing to do with it).
func resolvedManaged() bool {
	if !sameNetns() {
		return false
	}
	if target, err := filepath.EvalSymlinks(resolvConfPath); err == nil && strings.HasPrefix(target, "/run/systemd/resolve/") {
		return true
	}
	b, err := os.ReadFile(resolvConfPath)
	if err != nil {
		return false
	}
	s := string(b)
	return strings.Contains(s, "nameserver 127.0.0.53") && strings.Contains(s, "systemd-resolved")
}

func sameNetns() bool {
	self, err1 := os.Readlink("/proc/self/ns/net")
	initNS, err2 := os.Readlink("/proc/1/ns/net")
	return err1 == nil && err2 == nil && self == initNS
}
