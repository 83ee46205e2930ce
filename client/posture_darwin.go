package client

import (
	"context"
	"os/exec"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
)

// probePosture reads the macOS facts: the version (sw_vers), FileVault
// (fdesetup) and the application firewall (socketfilterfw).
func probePosture(ctx context.Context) controlapi.PostureReport {
	var r controlapi.PostureReport
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sw_vers", "-productVersion").Output(); err == nil {
		r.OSVersion = strings.TrimSpace(string(out))
		r.OSName = "macOS " + r.OSVersion
	}
	if out, err := exec.CommandContext(ctx, "fdesetup", "status").Output(); err == nil {
		r.DiskEncryption = strings.Contains(string(out), "FileVault is On")
	}
	if out, err := exec.CommandContext(ctx, "/usr/libexec/ApplicationFirewall/socketfilterfw", "--getglobalstate").Output(); err == nil {
		r.Firewall = strings.Contains(string(out), "enabled")
	}
	return r
}
