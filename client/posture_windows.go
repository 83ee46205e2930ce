package client

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/windows/registry"

	"postern.dev/postern/controlapi"
)

// probePosture reads the Windows facts: the version from the registry
// (major.minor.build, e.g. 10.0.19045), BitLocker on the system drive
// (manage-bde), and whether every firewall profile is on (netsh).
func probePosture(ctx context.Context) controlapi.PostureReport {
	var r controlapi.PostureReport
	if k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SOFTWARE\Microsoft\Windows NT\CurrentVersion`, registry.QUERY_VALUE); err == nil {
		maj, _, _ := k.GetIntegerValue("CurrentMajorVersionNumber")
		minor, _, _ := k.GetIntegerValue("CurrentMinorVersionNumber")
		build, _, _ := k.GetStringValue("CurrentBuildNumber")
		r.OSName, _, _ = k.GetStringValue("ProductName")
		k.Close()
		r.OSVersion = fmt.Sprintf("%d.%d.%s", maj, minor, build)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "manage-bde", "-status", "C:").Output(); err == nil {
		r.DiskEncryption = strings.Contains(string(out), "Protection On")
	}
	if out, err := exec.CommandContext(ctx, "netsh", "advfirewall", "show", "allprofiles", "state").Output(); err == nil {
		s := string(out)
		r.Firewall = strings.Contains(s, "ON") && !strings.Contains(s, "OFF")
	}
	return r
}
