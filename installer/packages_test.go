package installer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The acceptance tests build every package once, with the real programs and
// throwaway keys, and then check them with each system's standard tools.

const testVersion = "0.7.1"

// requireTools skips (or, under CI=true, fails) when a standard tool is missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("%s not installed (make deps installs it)", tool)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

type fixture struct {
	dir       string
	bin       string // linux programs
	win       string // windows programs
	conn      string // static connector
	out       string // dist
	gpgKey    string
	gpgPass   string
	caPEM     string
	csCert    string
	csKey     string
	cfg       *Config
	pkgTool   string   // the postern-pkg program
	pkgEnv    []string // its key environment
	artifacts []Artifact
	verify    VerificationFiles
}

var (
	fxOnce sync.Once
	fx     *fixture
	fxErr  error
	fxDir  string // removed by TestMain, also when the fixture failed
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fxDir != "" {
		os.RemoveAll(fxDir)
	}
	os.Exit(code)
}

var linuxPrograms = []string{"posternd", "postern", "postern-tray", "postern-connector", "postern-relay", "postern-controller"}

// getFixture builds the programs, makes throwaway keys and builds every package.
func getFixture(t *testing.T) *fixture {
	t.Helper()
	requireTools(t, "go", "gpg", "gpgconf", "openssl", "osslsigncode", "wixl", "msibuild")
	fxOnce.Do(func() { fx, fxErr = buildFixture() })
	if fxErr != nil {
		t.Fatal(fxErr)
	}
	return fx
}

func buildFixture() (*fixture, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "postern-pkgtest-")
	if err != nil {
		return nil, err
	}
	f := &fixture{dir: dir, bin: filepath.Join(dir, "bin"), win: filepath.Join(dir, "win"),
		conn: filepath.Join(dir, "static", "postern-connector"), out: filepath.Join(dir, "dist")}
	fxDir = dir
	start := time.Now()
	phase := func(what string) {
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "fixture: %s ready after %v\n", what, time.Since(start).Round(time.Millisecond))
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	ldflags := "-X postern.dev/postern/version.Version=" + testVersion
	pkgs := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, "./cmd/"+n)
		}
		return out
	}
	if _, err := runCmd(ctx, root, nil, "go", append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", f.bin + "/"}, pkgs(linuxPrograms...)...)...); err != nil {
		return nil, err
	}
	// Same flags as `make build` (linux) and `make check` (windows) so that the
	// build cache is shared and only linking is left.
	if _, err := runCmd(ctx, root, []string{"GOOS=windows", "GOARCH=amd64"}, "go", append([]string{"build", "-ldflags", ldflags, "-o", f.win + "/"}, pkgs("posternd", "postern", "postern-tray")...)...); err != nil {
		return nil, err
	}
	if _, err := runCmd(ctx, root, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", f.conn, "./cmd/postern-connector"); err != nil {
		return nil, err
	}

	// Throwaway OpenPGP key, protected by a passphrase, in a private GNUPGHOME.
	gnupg, err := os.MkdirTemp("", "pgpg-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(gnupg)
	genv := []string{"GNUPGHOME=" + gnupg}
	defer runCmd(context.Background(), "", genv, "gpgconf", "--kill", "all")
	f.gpgPass = "throwaway passphrase"
	gpg := []string{"--batch", "--pinentry-mode", "loopback", "--passphrase", f.gpgPass}
	if _, err := runCmd(ctx, "", genv, "gpg", append(gpg, "--quick-gen-key", "Postern Test Packages <packages@postern.invalid>", "rsa3072", "sign", "1d")...); err != nil {
		return nil, err
	}
	key, err := runCmd(ctx, "", genv, "gpg", append(gpg, "--armor", "--export-secret-keys")...)
	if err != nil {
		return nil, err
	}
	f.gpgKey = filepath.Join(dir, "signing-key.asc")
	if err := os.WriteFile(f.gpgKey, []byte(key), 0o600); err != nil {
		return nil, err
	}

	// Throwaway Authenticode CA and code-signing certificate.
	f.caPEM, f.csCert, f.csKey = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cs.pem"), filepath.Join(dir, "cs.key")
	ext := filepath.Join(dir, "cs.ext")
	if err := os.WriteFile(ext, []byte("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n"), 0o644); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", filepath.Join(dir, "ca.key"), "-out", f.caPEM, "-days", "2",
			"-subj", "/CN=Postern Test Code Signing CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"},
		{"req", "-newkey", "rsa:2048", "-nodes", "-keyout", f.csKey, "-out", filepath.Join(dir, "cs.csr"), "-subj", "/CN=Postern Test Code Signing"},
		{"x509", "-req", "-in", filepath.Join(dir, "cs.csr"), "-CA", f.caPEM, "-CAkey", filepath.Join(dir, "ca.key"), "-CAcreateserial",
			"-out", f.csCert, "-days", "2", "-extfile", ext},
	} {
		if _, err := runCmd(ctx, dir, nil, "openssl", args...); err != nil {
			return nil, err
		}
	}

	phase("programs and keys")
	f.cfg = &Config{
		Version: testVersion, Arch: runtime.GOARCH, BinDir: f.bin, WinBinDir: f.win, OutDir: f.out,
		GPG:         GPGKey{KeyFile: f.gpgKey, Passphrase: f.gpgPass},
		CodeSign:    CodeSignKey{CertFile: f.csCert, KeyFile: f.csKey},
		MSITestMode: true, // no wintun.dll can be downloaded here; TestMSIRelease covers the release path
		Log:         slog.New(slog.DiscardHandler),
	}
	// The packages are built by the postern-pkg program (not race-instrumented
	// like this test binary), with the keys given as `make packages` gets them.
	f.pkgTool = filepath.Join(dir, "postern-pkg")
	pkgTool := f.pkgTool
	if _, err := runCmd(ctx, root, nil, "go", "build", "-o", pkgTool, "./cmd/postern-pkg"); err != nil {
		return nil, err
	}
	passFile := filepath.Join(dir, "gpg-pass")
	if err := os.WriteFile(passFile, []byte(f.gpgPass+"\n"), 0o600); err != nil {
		return nil, err
	}
	f.pkgEnv = []string{
		EnvGPGKeyFile + "=" + f.gpgKey, EnvGPGPassphrase + "=", EnvGPGPassphraseFile + "=" + passFile,
		EnvCodeSignCert + "=" + f.csCert, EnvCodeSignKey + "=" + f.csKey, EnvCodeSignPKCS12 + "=",
		EnvWintunDLL + "=", EnvMSITest + "=1", // no wintun.dll can be downloaded here; TestMSIRelease covers the release path
	}
	out, err := runCmd(ctx, dir, f.pkgEnv, pkgTool, "--version", testVersion, "--arch", runtime.GOARCH, "--bin", f.bin, "--win-bin", f.win,
		"--connector-bin", runtime.GOARCH+"="+f.conn, "--out", f.out, "--targets", "all")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if kind, path, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "time=") {
			f.artifacts = append(f.artifacts, Artifact{Kind: kind, Path: strings.TrimSpace(path)})
		}
	}
	phase("packages")
	f.verify, err = WriteVerificationFiles(f.cfg)
	return f, err
}

func (f *fixture) files(kind string) []string {
	var out []string
	for _, a := range f.artifacts {
		if a.Kind == kind {
			out = append(out, a.Path)
		}
	}
	return out
}

// tamper copies path and flips one byte in its middle (package payload).
func tamper(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x55
	dst := filepath.Join(t.TempDir(), "tampered-"+filepath.Base(path))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestPackagesBuilt(t *testing.T) {
	f := getFixture(t)
	for kind, n := range map[string]int{"deb": 4, "rpm": 4, "msi": 1, "oci": 1, "helm": 1} {
		if got := len(f.files(kind)); got != n {
			t.Errorf("%d %s artifacts, want %d: %v", got, kind, n, f.files(kind))
		}
	}
	for _, p := range LinuxPackages() {
		deb := filepath.Join(f.out, fmt.Sprintf("%s_%s-1_%s.deb", p.Name, testVersion, runtime.GOARCH))
		if _, err := os.Stat(deb); err != nil {
			t.Errorf("missing %s: %v", deb, err)
		}
	}
	if !strings.Contains(filepath.Base(f.files("msi")[0]), "TEST-no-wintun") {
		t.Errorf("test-mode MSI %s is not labelled as such", f.files("msi")[0])
	}
}

func TestDebSignatures(t *testing.T) {
	requireTools(t, "debsig-verify")
	f := getFixture(t)
	verify := func(deb string) error {
		_, err := runCmd(t.Context(), "", nil, "debsig-verify", "--policies-dir", f.verify.PoliciesDir, "--keyrings-dir", f.verify.KeyringsDir, deb)
		return err
	}
	for _, deb := range f.files("deb") {
		if err := verify(deb); err != nil {
			t.Errorf("signed package does not verify: %v", err)
		}
	}
	if err := verify(tamper(t, f.files("deb")[0])); err == nil {
		t.Error("debsig-verify accepted a tampered package")
	}
	// A package signed by another key is refused by the policy.
	other := t.TempDir()
	if err := os.MkdirAll(filepath.Join(other, f.verify.KeyID), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t.Context(), "", nil, "debsig-verify", "--policies-dir", other, "--keyrings-dir", f.verify.KeyringsDir, f.files("deb")[0]); err == nil {
		t.Error("debsig-verify accepted a package without a matching policy")
	}
}

func TestRPMSignatures(t *testing.T) {
	requireTools(t, "rpmkeys")
	f := getFixture(t)
	db := t.TempDir()
	check := func(rpm string) (string, error) {
		return runCmd(t.Context(), "", nil, "rpmkeys", "--dbpath", db, "--checksig", "-v", rpm)
	}
	// Without the key imported the signature cannot be verified.
	if out, err := check(f.files("rpm")[0]); err == nil {
		t.Errorf("rpmkeys accepted a signature from an unknown key:\n%s", out)
	}
	if _, err := runCmd(t.Context(), "", nil, "rpmkeys", "--dbpath", db, "--import", f.verify.ArmoredPubKey); err != nil {
		t.Fatal(err)
	}
	for _, rpm := range f.files("rpm") {
		out, err := check(rpm)
		if err != nil {
			t.Errorf("signed package does not verify: %v", err)
			continue
		}
		if !strings.Contains(out, "Signature, key ID") || !strings.Contains(out, "RSA/SHA256") {
			t.Errorf("%s: no OpenPGP signature checked:\n%s", rpm, out)
		}
	}
	if out, err := check(tamper(t, f.files("rpm")[0])); err == nil {
		t.Errorf("rpmkeys accepted a tampered package:\n%s", out)
	}
	// Contents: settings are %config(noreplace), scriptlets manage the unit.
	for _, p := range LinuxPackages() {
		rpm := ""
		for _, r := range f.files("rpm") {
			if strings.HasPrefix(filepath.Base(r), p.Name+"-"+testVersion) {
				rpm = r
			}
		}
		if rpm == "" {
			t.Fatalf("no rpm for %s", p.Name)
		}
		conf, err := runCmd(t.Context(), "", nil, "rpm", "-qp", "--configfiles", rpm)
		if err != nil || !strings.Contains(conf, "/etc/default/"+p.DefaultFile) {
			t.Errorf("%s: /etc/default/%s is not a config file: %q %v", p.Name, p.DefaultFile, conf, err)
		}
		scripts, err := runCmd(t.Context(), "", nil, "rpm", "-qp", "--scripts", rpm)
		if err != nil || !strings.Contains(scripts, "postinstall scriptlet") || !strings.Contains(scripts, "preuninstall scriptlet") ||
			!strings.Contains(scripts, "postuninstall scriptlet") || !strings.Contains(scripts, "UNIT="+p.Unit) {
			t.Errorf("%s: scriptlets missing:\n%s %v", p.Name, scripts, err)
		}
	}
}

func msiTable(t *testing.T, msi, table string) string {
	t.Helper()
	out, err := runCmd(t.Context(), "", nil, "msiinfo", "export", msi, table)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMSI(t *testing.T) {
	requireTools(t, "msiinfo", "msiextract")
	f := getFixture(t)
	msi := f.files("msi")[0]
	if err := VerifyAuthenticode(t.Context(), msi, f.caPEM); err != nil {
		t.Errorf("MSI signature: %v", err)
	}
	if err := VerifyAuthenticode(t.Context(), tamper(t, msi), f.caPEM); err == nil {
		t.Error("osslsigncode accepted a tampered MSI")
	}
	// Every executable inside is signed.
	ex := t.TempDir()
	if _, err := runCmd(t.Context(), "", nil, "msiextract", "-C", ex, msi); err != nil {
		t.Fatal(err)
	}
	for _, p := range WindowsPrograms {
		exe := filepath.Join(ex, "Postern", p)
		if err := VerifyAuthenticode(t.Context(), exe, f.caPEM); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(ex, "Postern", "wintun.dll")); err == nil {
		t.Error("test-mode MSI contains a wintun.dll")
	}
	// posternd is an auto-start service; the tray starts at logon; presets land in the registry.
	svc := msiTable(t, msi, "ServiceInstall")
	if !strings.Contains(svc, "\tposternd\t") || !strings.Contains(svc, "\t16\t2\t") || !strings.Contains(svc, "LocalSystem") {
		t.Errorf("ServiceInstall does not install posternd as an auto-start (2) own-process (16) service:\n%s", svc)
	}
	if ctl := msiTable(t, msi, "ServiceControl"); !strings.Contains(ctl, "posternd") {
		t.Errorf("ServiceControl does not start/stop posternd:\n%s", ctl)
	}
	reg := msiTable(t, msi, "Registry")
	for _, want := range []string{
		"SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\tPostern\t\"[INSTALLDIR]postern-tray.exe\"",
		"SOFTWARE\\Postern\tControllerURL\t[CONTROLLER_URL]",
		"SOFTWARE\\Postern\tServiceKeyFile\t[SERVICE_KEY_FILE]",
		"SOFTWARE\\Postern\tRange4\t[RANGE4]",
		"SOFTWARE\\Postern\tRange6\t[RANGE6]",
	} {
		if !strings.Contains(reg, want) {
			t.Errorf("Registry table lacks %q:\n%s", want, reg)
		}
	}
	// 64-bit components: the registry values land in the 64-bit view that preset.Load reads.
	for _, line := range strings.Split(msiTable(t, msi, "Component"), "\n") {
		if fields := strings.Split(line, "\t"); len(fields) >= 4 && strings.HasPrefix(fields[1], "{") && !slices.Contains([]string{"256", "260"}, fields[3]) {
			t.Errorf("component %s is not 64-bit (attributes %s)", fields[0], fields[3])
		}
	}
	if prop := msiTable(t, msi, "Property"); !strings.Contains(prop, "CONTROLLER_URL;SERVICE_KEY_FILE;RANGE4;RANGE6") {
		t.Errorf("preset properties are not secure custom properties:\n%s", prop)
	}
	if seq := msiTable(t, msi, "InstallExecuteSequence"); !strings.Contains(seq, "KeepControllerURL\tNOT CONTROLLER_URL AND PREV_CONTROLLER_URL") ||
		!strings.Contains(seq, "KeepRange4\tNOT RANGE4 AND PREV_RANGE4") {
		t.Errorf("upgrade does not keep the preset controller URL:\n%s", seq)
	}
	sum, err := runCmd(t.Context(), "", nil, "msiinfo", "suminfo", msi)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sum, "TEST BUILD") || !strings.Contains(sum, "x64") {
		t.Errorf("test MSI summary does not say TEST BUILD / x64:\n%s", sum)
	}
}

// makeStandInDLL copies a Windows executable and marks it as a DLL: wintun.dll
// cannot be downloaded here, and the release path only needs an amd64 DLL image.
func makeStandInDLL(t *testing.T, exe string) string {
	t.Helper()
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	peOff := int(b[0x3c]) | int(b[0x3d])<<8 | int(b[0x3e])<<16 | int(b[0x3f])<<24
	chars := peOff + 4 + 18 // COFF header Characteristics
	b[chars+1] |= 0x20      // IMAGE_FILE_DLL (0x2000)
	dll := filepath.Join(t.TempDir(), "wintun.dll")
	if err := os.WriteFile(dll, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dll
}

func TestMSIRelease(t *testing.T) {
	requireTools(t, "msiinfo", "msiextract")
	f := getFixture(t)
	c := *f.cfg
	c.OutDir = t.TempDir()
	c.MSITestMode = false
	c.WintunDLL = ""
	if _, err := BuildMSI(t.Context(), &c); err == nil || !strings.Contains(err.Error(), "WINTUN_DLL") {
		t.Fatalf("release MSI without wintun: err = %v, want a message naming WINTUN_DLL", err)
	}
	c.WintunDLL = filepath.Join(f.win, "posternd.exe")
	if _, err := BuildMSI(t.Context(), &c); err == nil || !strings.Contains(err.Error(), "not a DLL") {
		t.Fatalf("release MSI with an .exe as wintun: err = %v", err)
	}
	c.WintunDLL = makeStandInDLL(t, filepath.Join(f.win, "postern.exe"))
	a, err := BuildMSI(t.Context(), &c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "postern-client-" + testVersion + "-x64.msi"; filepath.Base(a.Path) != want {
		t.Errorf("release MSI named %s, want %s", filepath.Base(a.Path), want)
	}
	if err := VerifyAuthenticode(t.Context(), a.Path, f.caPEM); err != nil {
		t.Error(err)
	}
	ex := t.TempDir()
	if _, err := runCmd(t.Context(), "", nil, "msiextract", "-C", ex, a.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ex, "Postern", "wintun.dll")); err != nil {
		t.Errorf("release MSI lacks wintun.dll next to posternd.exe: %v", err)
	}
	if sum, _ := runCmd(t.Context(), "", nil, "msiinfo", "suminfo", a.Path); strings.Contains(sum, "TEST") {
		t.Errorf("release MSI is labelled as a test build:\n%s", sum)
	}
	entries, _ := os.ReadDir(c.OutDir)
	if len(entries) != 1 {
		t.Errorf("output directory holds %d files, want only the release MSI (failed builds must leave nothing)", len(entries))
	}
}
