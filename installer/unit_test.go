package installer

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"postern.dev/postern/packaging"
)

func TestPackageVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3":                 "1.2.3",
		"v1.2.3":                "1.2.3",
		"0.1.0-dev":             "0.1.0-dev",
		"a1b2c3d-dirty":         "0.0.0+git.a1b2c3d-dirty",
		"1f145d5-dirty":         "0.0.0+git.1f145d5-dirty",
		"1f145d5":               "0.0.0+git.1f145d5",
		"v2.0.0-rc.1":           "2.0.0-rc.1",
		"v1.2.0-3-gabc123":      "1.2.0+git.3.gabc123",
		"1.2.0-3-gabc123-dirty": "1.2.0+git.3.gabc123.dirty",
	} {
		if got := packageVersion(in); got != want {
			t.Errorf("packageVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageTag(t *testing.T) {
	if got := ImageTag("1f145d5-dirty"); got != "0.0.0_git.1f145d5-dirty" {
		t.Errorf("ImageTag = %q", got)
	}
	if got := ImageTag("v1.4.0"); got != "1.4.0" {
		t.Errorf("ImageTag = %q", got)
	}
}

func TestMSIVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3":         "1.2.3",
		"v0.1.0-dev":    "0.1.0",
		"300.2.70000":   "255.2.65535",
		"a1b2c3d-dirty": "0.0.0",
		"2.5":           "2.5.0",
	} {
		if got := msiVersion(in); got != want {
			t.Errorf("msiVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseTargets(t *testing.T) {
	tg, err := ParseTargets("linux,helm")
	if err != nil || !tg.Linux || !tg.Helm || tg.MSI || tg.Image {
		t.Fatalf("ParseTargets(linux,helm) = %+v, %v", tg, err)
	}
	tg, err = ParseTargets("all")
	if err != nil || !(tg.Linux && tg.MSI && tg.Image && tg.Helm) {
		t.Fatalf("ParseTargets(all) = %+v, %v", tg, err)
	}
	if _, err := ParseTargets("linux,dmg"); !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), `"dmg"`) {
		t.Fatalf("unknown target: err = %v, want ErrBadConfig naming dmg", err)
	}
	if _, err := ParseTargets(""); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("empty targets: err = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Version: "", OutDir: "d"},
		{Version: "1.0 beta", OutDir: "d"},
		{Version: "1.0", OutDir: ""},
		{Version: "1.0", OutDir: "d", Arch: "mips"},
	} {
		if err := c.validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("validate(%+v) = %v, want ErrBadConfig", c, err)
		}
	}
	c := Config{Version: "1.0", OutDir: "d"}
	if err := c.validate(); err != nil || c.Arch != "amd64" {
		t.Fatalf("validate defaults: %v, arch %q", err, c.Arch)
	}
}

func TestConfigFromEnv(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvGPGKeyFile, "/k.asc")
	t.Setenv(EnvGPGPassphrase, "")
	t.Setenv(EnvGPGPassphraseFile, pass)
	t.Setenv(EnvCodeSignPKCS12, "/cs.p12")
	t.Setenv(EnvWintunDLL, "/w.dll")
	t.Setenv(EnvMSITest, "1")
	var c Config
	if err := ConfigFromEnv(&c); err != nil {
		t.Fatal(err)
	}
	if c.GPG.KeyFile != "/k.asc" || c.GPG.Passphrase != "s3cret" || c.CodeSign.PKCS12File != "/cs.p12" ||
		!c.CodeSign.Configured() || c.WintunDLL != "/w.dll" || !c.MSITestMode {
		t.Fatalf("ConfigFromEnv = %+v", c)
	}
	t.Setenv(EnvGPGPassphraseFile, filepath.Join(dir, "missing"))
	if err := ConfigFromEnv(&Config{}); err == nil || !strings.Contains(err.Error(), EnvGPGPassphraseFile) {
		t.Fatalf("missing passphrase file: err = %v", err)
	}
}

// Every maintainer script renders for every package and is valid POSIX sh.
func TestMaintainerScriptsRender(t *testing.T) {
	if _, err := exec.LookPath("dash"); err != nil {
		t.Skip("dash not installed")
	}
	stage := t.TempDir()
	for _, p := range LinuxPackages() {
		s, err := renderScripts(stage, p)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		for _, f := range []string{s.PostInstall, s.PreRemove, s.PostRemove} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "UNIT="+p.Unit) {
				t.Errorf("%s: does not name its unit %s", f, p.Unit)
			}
			if out, err := exec.Command("dash", "-n", f).CombinedOutput(); err != nil {
				t.Errorf("%s %s: syntax error: %v: %s", p.Name, filepath.Base(f), err, out)
			}
		}
	}
}

// Each package's /etc/default file declares the variables its unit uses.
func TestUnitsAndDefaultsAgree(t *testing.T) {
	for _, p := range LinuxPackages() {
		unit, err := fs.ReadFile(packaging.Files, "systemd/"+p.Unit)
		if err != nil {
			t.Fatal(err)
		}
		def, err := fs.ReadFile(packaging.Files, "default/"+p.DefaultFile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(unit), "EnvironmentFile=") || !strings.Contains(string(unit), "/etc/default/"+p.DefaultFile) {
			t.Errorf("%s does not read /etc/default/%s", p.Unit, p.DefaultFile)
		}
		for _, v := range p.RequiredVars {
			if !strings.Contains(string(unit), "${"+v+"}") {
				t.Errorf("%s does not use %s", p.Unit, v)
			}
			if !strings.Contains(string(def), v+"=") {
				t.Errorf("/etc/default/%s does not declare %s", p.DefaultFile, v)
			}
		}
		for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "StateDirectory="} {
			if !strings.Contains(string(unit), want) {
				t.Errorf("%s lacks %s", p.Unit, want)
			}
		}
	}
	unit, _ := fs.ReadFile(packaging.Files, "systemd/posternd.service")
	for _, want := range []string{"DeviceAllow=/dev/net/tun rw", "CAP_NET_ADMIN", "StateDirectory=postern", "RuntimeDirectory=postern"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("posternd.service lacks %s", want)
		}
	}
}

func TestBuildRefusesWithoutKeys(t *testing.T) {
	c := &Config{Version: "1.0.0", OutDir: t.TempDir(), BinDir: t.TempDir()}
	if _, err := Build(t.Context(), c, Targets{Linux: true}); !errors.Is(err, ErrNoSigningKey) || !strings.Contains(err.Error(), EnvGPGKeyFile) {
		t.Errorf("linux without key: %v", err)
	}
	if _, err := Build(t.Context(), c, Targets{MSI: true}); !errors.Is(err, ErrNoWintun) {
		t.Errorf("msi without wintun: %v", err)
	}
	if !strings.Contains(ErrNoWintun.Error(), "WINTUN_DLL") || !strings.Contains(ErrNoWintun.Error(), "not redistributed") {
		t.Errorf("ErrNoWintun message does not say what to do: %v", ErrNoWintun)
	}
	c.WintunDLL = "/nonexistent/wintun.dll"
	if _, err := Build(t.Context(), c, Targets{MSI: true}); !errors.Is(err, ErrNoSigningKey) {
		t.Errorf("msi without code-signing key: %v", err)
	}
	c.Unsigned = true
	if _, err := Build(t.Context(), c, Targets{Linux: true}); !errors.Is(err, ErrMissingBinary) || !strings.Contains(err.Error(), "posternd") {
		t.Errorf("missing binaries: %v", err)
	}
	if entries, _ := os.ReadDir(c.OutDir); len(entries) != 0 {
		t.Errorf("a failed build left files in the output directory: %v", entries)
	}
}
