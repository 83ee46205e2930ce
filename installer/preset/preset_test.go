package preset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	in := `# comment
POSTERND_FLAGS=""
POSTERN_CONTROLLER_URL="https://postern.example.com"
export POSTERN_SERVICE_KEY='/etc/postern/ci.key'
OTHER=plain value
`
	got, err := parseEnvFile(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"POSTERND_FLAGS": "", "POSTERN_CONTROLLER_URL": "https://postern.example.com",
		"POSTERN_SERVICE_KEY": "/etc/postern/ci.key", "OTHER": "plain value",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := parseEnvFile(strings.NewReader("no equals sign\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad line: err = %v, want one naming line 1", err)
	}
}

func TestLoadDefaultsFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "posternd")
	if err := os.WriteFile(path, []byte("POSTERN_CONTROLLER_URL=\"https://a.example\"\nPOSTERN_SERVICE_KEY=\"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := loadDefaultsFile(path)
	if err != nil || p.ControllerURL != "https://a.example" || p.ServiceKeyFile != "" {
		t.Fatalf("loadDefaultsFile = %+v, %v", p, err)
	}
	if p, err := loadDefaultsFile(filepath.Join(dir, "missing")); err != nil || p != (Preset{}) {
		t.Fatalf("missing file: %+v, %v", p, err)
	}
	t.Setenv(EnvControllerURL, "https://env.example")
	t.Setenv(EnvServiceKey, "/k")
	p, err = Load()
	if err != nil || p.ControllerURL != "https://env.example" || p.ServiceKeyFile != "/k" {
		t.Fatalf("Load with env = %+v, %v", p, err)
	}
}

func TestRangePresets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "posternd")
	if err := os.WriteFile(path, []byte("POSTERN_RANGE4=\"10.200.0.0/16\"\nPOSTERN_RANGE6='fd00:1234:5678::/48'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := loadDefaultsFile(path)
	if err != nil || p.Range4 != "10.200.0.0/16" || p.Range6 != "fd00:1234:5678::/48" {
		t.Fatalf("loadDefaultsFile = %+v, %v", p, err)
	}
	t.Setenv(EnvRange4, "172.20.0.0/16")
	t.Setenv(EnvRange6, "fd99::/48")
	if p, err := Load(); err != nil || p.Range4 != "172.20.0.0/16" || p.Range6 != "fd99::/48" {
		t.Fatalf("Load with range env = %+v, %v", p, err)
	}
}
