package client

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestPostureLinuxProbes(t *testing.T) {
	dir := t.TempDir()
	mi := filepath.Join(dir, "mountinfo")
	os.WriteFile(mi, []byte("22 1 0:21 / /proc rw - proc proc rw\n25 1 253:1 / / rw,relatime - ext4 /dev/mapper/root rw\n"), 0o600)
	if got := rootDevice(mi); got != "253:1" {
		t.Fatalf("rootDevice = %q", got)
	}
	osr := filepath.Join(dir, "os-release")
	os.WriteFile(osr, []byte("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"), 0o600)
	if got := osReleaseName(osr); got != "Debian GNU/Linux 12 (bookworm)" {
		t.Fatalf("osReleaseName = %q", got)
	}
	// LVM on LUKS: the root LV's slave is the crypt device.
	lv := filepath.Join(dir, "dm-1")
	crypt := filepath.Join(lv, "slaves", "dm-0")
	os.MkdirAll(filepath.Join(lv, "dm"), 0o755)
	os.WriteFile(filepath.Join(lv, "dm", "uuid"), []byte("LVM-abc"), 0o600)
	os.MkdirAll(filepath.Join(crypt, "dm"), 0o755)
	os.WriteFile(filepath.Join(crypt, "dm", "uuid"), []byte("CRYPT-LUKS2-0123-root"), 0o600)
	if !onCrypt(lv, 0) {
		t.Fatal("LVM on LUKS not seen as encrypted")
	}
	os.WriteFile(filepath.Join(crypt, "dm", "uuid"), []byte("LVM-other"), 0o600)
	if onCrypt(lv, 0) {
		t.Fatal("plain LVM seen as encrypted")
	}
	if !nftFiltersInput("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}") ||
		nftFiltersInput("table ip nat {\n\tchain post {\n\t\ttype nat hook postrouting priority srcnat;\n\t}\n}") {
		t.Fatal("nftFiltersInput")
	}
	// The real probe runs and reports this kernel.
	if r := collectPosture(context.Background()); r.OS != "linux" || r.OSVersion == "" || r.ClientVersion == "" {
		t.Fatalf("collectPosture: %+v", r)
	}
}
