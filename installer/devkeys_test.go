package installer

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// noKeyEnv blanks every key variable, as on a fresh clone.
var noKeyEnv = []string{
	EnvGPGKeyFile + "=", EnvGPGKeyID + "=", EnvGPGPassphrase + "=", EnvGPGPassphraseFile + "=",
	EnvCodeSignCert + "=", EnvCodeSignKey + "=", EnvCodeSignPKCS12 + "=", EnvCodeSignPass + "=", EnvCodeSignPassFile + "=",
	EnvWintunDLL + "=", EnvMSITest + "=",
}

func TestUseDevKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev-keys")
	c := &Config{Version: "1.0.0", OutDir: t.TempDir()}
	dev, err := UseDevKeys(c, Targets{Linux: true, MSI: true}, dir)
	if err != nil || !dev {
		t.Fatalf("UseDevKeys = %v, %v; want true", dev, err)
	}
	if !c.IsDevBuild() || c.GPG.KeyFile == "" || !c.CodeSign.Configured() || !c.MSITestMode {
		t.Fatalf("config not switched to development keys: %+v", c)
	}
	id1, err := KeyID(c.GPG)
	if err != nil {
		t.Fatalf("generated OpenPGP key does not load: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, DevKeysReadme)); err != nil {
		t.Errorf("no %s next to the keys: %v", DevKeysReadme, err)
	}
	if fi, err := os.Stat(c.GPG.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("development secret key mode: %v %v", fi.Mode(), err)
	}
	// A second build reuses the same key.
	c2 := &Config{Version: "1.0.0", OutDir: t.TempDir()}
	if _, err := UseDevKeys(c2, Targets{Linux: true}, dir); err != nil {
		t.Fatal(err)
	}
	if id2, _ := KeyID(c2.GPG); id2 != id1 {
		t.Errorf("second development build generated a new key %s (first %s)", id2, id1)
	}
	// Configured keys are never replaced, and nothing is marked as development.
	c3 := &Config{Version: "1.0.0", OutDir: t.TempDir(), GPG: GPGKey{KeyFile: "/real/key.asc"}}
	if dev, err := UseDevKeys(c3, Targets{Linux: true}, filepath.Join(t.TempDir(), "unused")); err != nil || dev || c3.IsDevBuild() || c3.GPG.KeyFile != "/real/key.asc" {
		t.Errorf("UseDevKeys with a configured key: dev=%v err=%v cfg=%+v", dev, err, c3)
	}
}

func TestCheckRelease(t *testing.T) {
	all := Targets{Linux: true, MSI: true}
	good := Config{GPG: GPGKey{KeyFile: "k.asc"}, CodeSign: CodeSignKey{CertFile: "c.pem", KeyFile: "c.key"}, WintunDLL: "wintun.dll"}
	if err := CheckRelease(&good, all); err != nil {
		t.Fatalf("release with every key refused: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no gpg key":  func(c *Config) { c.GPG.KeyFile = "" },
		"no codesign": func(c *Config) { c.CodeSign = CodeSignKey{} },
		"unsigned":    func(c *Config) { c.Unsigned = true },
		"dev keys":    func(c *Config) { c.DevKeysDir = "dist/dev-keys" },
		"test msi":    func(c *Config) { c.MSITestMode = true },
		"no wintun":   func(c *Config) { c.WintunDLL = "" },
	} {
		c := good
		mod(&c)
		if err := CheckRelease(&c, all); !errors.Is(err, ErrReleaseNeedsKeys) {
			t.Errorf("%s: CheckRelease = %v, want ErrReleaseNeedsKeys", name, err)
		}
	}
}

// TestMakePackagesRelease runs `make packages RELEASE=1` without keys, as on a
// fresh clone: it must stop before building anything and name the variable.
func TestMakePackagesRelease(t *testing.T) {
	requireTools(t, "make", "go")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "dist")
	cmd := exec.CommandContext(t.Context(), "make", "--no-print-directory", "packages", "RELEASE=1", "PKG_OUT="+out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), noKeyEnv...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err == nil {
		t.Fatalf("make packages RELEASE=1 without keys succeeded:\n%s", buf.String())
	}
	for _, want := range []string{"release build refused", EnvGPGKeyFile} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("refusal does not say %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(buf.String(), "programs") {
		t.Errorf("make cross-built programs before refusing:\n%s", buf.String())
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused release build created %s (%v)", out, err)
	}
}

// TestDevKeyPackages builds packages the way `make packages` does on a fresh
// clone (no key variables, --dev-keys): they are signed with the generated
// key, verify with the standard tools, and say DEVELOPMENT BUILD in their
// names, metadata and in the tool's output.
func TestDevKeyPackages(t *testing.T) {
	requireTools(t, "dpkg-deb", "rpm", "debsig-verify", "msiinfo")
	f := getFixture(t)
	dir := t.TempDir()
	out, keys := filepath.Join(dir, "dist"), filepath.Join(dir, "dist", "dev-keys")
	cmd := exec.CommandContext(t.Context(), f.pkgTool, "--version", testVersion, "--bin", f.bin, "--win-bin", f.win,
		"--out", out, "--targets", "linux,msi", "--packages", "postern-relay", "--dev-keys", keys)
	cmd.Env = append(os.Environ(), noKeyEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("development build failed: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "DEVELOPMENT BUILD") || !strings.Contains(stderr.String(), keys) {
		t.Errorf("output does not warn about the development keys:\n%s", stderr.String())
	}
	arts := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if kind, path, ok := strings.Cut(line, " "); ok {
			arts[kind] = append(arts[kind], strings.TrimSpace(path))
		}
	}
	if len(arts["deb"]) != 1 || len(arts["rpm"]) != 1 || len(arts["msi"]) != 1 {
		t.Fatalf("artifacts: %v", arts)
	}
	for _, p := range append(append(arts["deb"], arts["rpm"]...), arts["msi"]...) {
		if !strings.Contains(filepath.Base(p), devPackageSuffix) {
			t.Errorf("%s is not labelled %s", p, devPackageSuffix)
		}
	}
	deb, rpm, msi := arts["deb"][0], arts["rpm"][0], arts["msi"][0]
	if desc, err := runCmd(t.Context(), "", nil, "dpkg-deb", "-f", deb, "Description", "Vendor"); err != nil ||
		!strings.Contains(desc, "DEVELOPMENT BUILD") || !strings.Contains(desc, "throwaway") {
		t.Errorf(".deb metadata does not say DEVELOPMENT BUILD: %q %v", desc, err)
	}
	if q, err := runCmd(t.Context(), "", nil, "rpm", "-qp", "--qf", "%{SUMMARY}|%{VENDOR}", rpm); err != nil ||
		!strings.Contains(q, "DEVELOPMENT BUILD") {
		t.Errorf(".rpm metadata does not say DEVELOPMENT BUILD: %q %v", q, err)
	}
	// Signed with the development key: the verification files it wrote check it.
	v, err := WriteVerificationFiles(&Config{OutDir: out, GPG: GPGKey{KeyFile: filepath.Join(keys, DevGPGKeyFile)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t.Context(), "", nil, "debsig-verify", "--policies-dir", v.PoliciesDir, "--keyrings-dir", v.KeyringsDir, deb); err != nil {
		t.Errorf("development .deb does not verify with its key: %v", err)
	}
	if err := VerifyAuthenticode(t.Context(), msi, filepath.Join(keys, DevCodeSignCert)); err != nil {
		t.Errorf("development MSI does not verify with its certificate: %v", err)
	}
	if sum, err := runCmd(t.Context(), "", nil, "msiinfo", "suminfo", msi); err != nil || !strings.Contains(sum, "DEVELOPMENT BUILD") {
		t.Errorf("MSI summary does not say DEVELOPMENT BUILD:\n%s %v", sum, err)
	}
	// --release with the same (absent) keys refuses and writes nothing.
	rel := filepath.Join(dir, "release")
	cmd = exec.CommandContext(t.Context(), f.pkgTool, "--version", testVersion, "--bin", f.bin, "--out", rel, "--targets", "linux", "--release")
	cmd.Env = append(os.Environ(), noKeyEnv...)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), EnvGPGKeyFile) {
		t.Errorf("--release without keys: err=%v\n%s", err, b)
	}
	if _, err := os.Stat(rel); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused release build created %s", rel)
	}
}
