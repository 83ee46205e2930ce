package client

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"postern.dev/postern/controlapi"
)

// probePosture reads the Linux facts: the kernel release (uname), the
// distribution (/etc/os-release), whether the root file system sits on
// dm-crypt (LUKS), and whether a firewall is active (ufw, firewalld, or an
// nftables chain on the input hook).
func probePosture(ctx context.Context) controlapi.PostureReport {
	var r controlapi.PostureReport
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		r.OSVersion = unix.ByteSliceToString(u.Release[:])
	}
	r.OSName = osReleaseName("/etc/os-release")
	r.DiskEncryption = rootEncrypted()
	r.Firewall = firewallActive(ctx)
	return r
}

func osReleaseName(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// rootEncrypted reports whether the block device under / is, or sits on, a
// dm-crypt device (its device-mapper uuid starts with "CRYPT-").
func rootEncrypted() bool {
	dev := rootDevice("/proc/self/mountinfo")
	if dev == "" {
		return false
	}
	return onCrypt(filepath.Join("/sys/dev/block", dev), 0)
}

// rootDevice returns "major:minor" of the file system mounted at /.
func rootDevice(mountinfo string) string {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && f[4] == "/" {
			return f[2]
		}
	}
	return ""
}

func onCrypt(sysdev string, depth int) bool {
	if depth > 8 {
		return false
	}
	if uuid, err := os.ReadFile(filepath.Join(sysdev, "dm", "uuid")); err == nil && strings.HasPrefix(string(uuid), "CRYPT-") {
		return true
	}
	slaves, _ := os.ReadDir(filepath.Join(sysdev, "slaves"))
	for _, s := range slaves {
		if onCrypt(filepath.Join(sysdev, "slaves", s.Name()), depth+1) {
			return true
		}
	}
	return false
}

func firewallActive(ctx context.Context) bool {
	if b, err := os.ReadFile("/etc/ufw/ufw.conf"); err == nil && strings.Contains(string(b), "ENABLED=yes") {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if exec.CommandContext(ctx, "systemctl", "is-active", "--quiet", "firewalld").Run() == nil {
		return true
	}
	out, err := exec.CommandContext(ctx, "nft", "list", "ruleset").Output()
	return err == nil && nftFiltersInput(string(out))
}

// nftFiltersInput reports whether a ruleset has a filter chain on the input hook.
func nftFiltersInput(ruleset string) bool {
	for _, line := range strings.Split(ruleset, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "type filter hook input") {
			return true
		}
	}
	return false
}
