package platform

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestTakeOverDNSState: what every OS's NewOSConfigurator does first. No
// state directory is a configuration error; a change a crashed run left
// behind is undone (the original file back, the record gone); a record that
// cannot be read stops the configurator and stays for a human to look at.
func TestTakeOverDNSState(t *testing.T) {
	if err := takeOverDNSState(""); !errors.Is(err, ErrDNSConfig) {
		t.Errorf("no state directory: %v, want ErrDNSConfig", err)
	}
	if err := takeOverDNSState(t.TempDir()); err != nil {
		t.Errorf("empty state directory: %v", err)
	}

	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte(resolvConfMarker+"\nnameserver 100.96.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeState(dir, &dnsState{Mode: modeResolvConf, Path: resolv, Original: []byte(origResolv)}); err != nil {
		t.Fatal(err)
	}
	if err := takeOverDNSState(dir); err != nil {
		t.Fatalf("state left by a crashed run: %v", err)
	}
	if b, _ := os.ReadFile(resolv); string(b) != origResolv {
		t.Errorf("resolv.conf after taking over: %q, want the original", b)
	}
	if _, err := os.Stat(statePath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the crashed run's record stayed: %v", err)
	}

	bad := t.TempDir()
	if err := os.WriteFile(statePath(bad), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := takeOverDNSState(bad); !errors.Is(err, ErrDNSState) {
		t.Errorf("unreadable record: %v, want ErrDNSState", err)
	}
	if _, err := os.Stat(statePath(bad)); err != nil {
		t.Errorf("the unreadable record was removed: %v", err)
	}
}
