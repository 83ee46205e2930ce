package installer

import (
	"bytes"
	"context"
	"debug/pe"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"postern.dev/postern/packaging"
)

// WindowsPrograms are the executables the MSI installs into
// %ProgramFiles%\Postern.
var WindowsPrograms = []string{"posternd.exe", "postern.exe", "postern-tray.exe"}

// msiVersion turns the build version into the numeric MAJOR.MINOR.BUILD form
// Windows Installer compares on upgrade (each part capped to its range).
func msiVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	limits := []int{255, 255, 65535}
	parts := []string{"0", "0", "0"}
	fields := strings.FieldsFunc(v, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '~' })
	for i := 0; i < 3 && i < len(fields); i++ {
		n, err := strconv.Atoi(fields[i])
		if err != nil {
			break
		}
		parts[i] = strconv.Itoa(min(max(n, 0), limits[i]))
	}
	return strings.Join(parts, ".")
}

// checkPE verifies that path is an x86-64 PE image (a DLL when wantDLL).
func checkPE(path string, wantDLL bool) error {
	f, err := pe.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not a Windows PE file: %w", path, err)
	}
	defer f.Close()
	if f.Machine != pe.IMAGE_FILE_MACHINE_AMD64 {
		return fmt.Errorf("%s is not built for x86-64 (PE machine 0x%x); the MSI is x64", path, f.Machine)
	}
	isDLL := f.Characteristics&pe.IMAGE_FILE_DLL != 0
	if wantDLL && !isDLL {
		return fmt.Errorf("%s is an executable, not a DLL", path)
	}
	if !wantDLL && isDLL {
		return fmt.Errorf("%s is a DLL, not an executable", path)
	}
	return nil
}

type wxsData struct {
	ProductName string
	Version     string
	MSIVersion  string
	Comments    string
	WintunDLL   bool
}

// BuildMSI builds the Windows client MSI (x64) with wixl from WinBinDir,
// signing every executable and the MSI with Authenticode. Without WintunDLL it
// refuses (ErrNoWintun) unless MSITestMode, which yields a file and product
// name marked as a test build.
func BuildMSI(ctx context.Context, c *Config) (Artifact, error) {
	if err := c.validate(); err != nil {
		return Artifact{}, err
	}
	if c.WintunDLL == "" && !c.MSITestMode {
		return Artifact{}, ErrNoWintun
	}
	if !c.CodeSign.Configured() && !c.Unsigned {
		return Artifact{}, fmt.Errorf("%w: set %s and %s (or %s) to sign the Windows programs and the MSI", ErrNoSigningKey, EnvCodeSignCert, EnvCodeSignKey, EnvCodeSignPKCS12)
	}
	wixl, err := exec.LookPath("wixl")
	if err != nil {
		return Artifact{}, fmt.Errorf("%w: wixl (apt-get install wixl): %v", ErrTool, err)
	}
	if c.WintunDLL != "" {
		if err := checkPE(c.WintunDLL, true); err != nil {
			return Artifact{}, fmt.Errorf("%s: %w", EnvWintunDLL, err)
		}
	}
	for _, p := range WindowsPrograms {
		if err := checkPE(filepath.Join(c.WinBinDir, p), false); err != nil {
			return Artifact{}, fmt.Errorf("%w: %v (cross-build with GOOS=windows GOARCH=amd64)", ErrMissingBinary, err)
		}
	}

	stage, err := os.MkdirTemp("", "postern-msi-")
	if err != nil {
		return Artifact{}, fmt.Errorf("create MSI staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	for _, p := range WindowsPrograms {
		if err := copyFile(filepath.Join(c.WinBinDir, p), filepath.Join(stage, p)); err != nil {
			return Artifact{}, err
		}
		if c.CodeSign.Configured() {
			if err := SignAuthenticode(ctx, c, filepath.Join(stage, p), "Postern "+strings.TrimSuffix(p, ".exe")); err != nil {
				return Artifact{}, err
			}
		}
	}
	data := wxsData{
		ProductName: "Postern",
		Version:     c.Version,
		MSIVersion:  msiVersion(c.Version),
		Comments:    "Postern zero-trust access client",
		WintunDLL:   c.WintunDLL != "",
	}
	name := fmt.Sprintf("postern-client-%s-x64", packageVersion(c.Version))
	if c.WintunDLL == "" {
		data.ProductName = "Postern TEST BUILD (no wintun.dll, not for deployment)"
		data.Comments = "Test build without wintun.dll: the TUN device cannot start. Not for deployment."
		name += "-TEST-no-wintun"
	} else if err := copyFile(c.WintunDLL, filepath.Join(stage, "wintun.dll")); err != nil {
		return Artifact{}, err
	}
	if !c.CodeSign.Configured() {
		name += "-unsigned"
	} else if c.IsDevBuild() {
		data.ProductName += " DEVELOPMENT BUILD"
		data.Comments += " DEVELOPMENT BUILD: signed with a throwaway development certificate; not for deployment."

		name += devPackageSuffix
	}
	src, err := fs.ReadFile(packaging.Files, "windows/postern.wxs.tmpl")
	if err != nil {
		return Artifact{}, fmt.Errorf("read WiX template: %w", err)
	}
	t, err := template.New("wxs").Option("missingkey=error").Parse(string(src))
	if err != nil {
		return Artifact{}, fmt.Errorf("parse WiX template: %w", err)
	}
	var wxs bytes.Buffer
	if err := t.Execute(&wxs, data); err != nil {
		return Artifact{}, fmt.Errorf("render WiX source: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stage, "postern.wxs"), wxs.Bytes(), 0o644); err != nil {
		return Artifact{}, fmt.Errorf("write WiX source: %w", err)
	}
	msi := filepath.Join(stage, "postern.msi")
	cmd := exec.CommandContext(ctx, wixl, "-a", "x64", "-o", msi, "postern.wxs")
	cmd.Dir = stage
	if out, err := cmd.CombinedOutput(); err != nil {
		return Artifact{}, fmt.Errorf("wixl: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := securePresetProperties(ctx, msi); err != nil {
		return Artifact{}, err
	}
	if c.CodeSign.Configured() {
		if err := SignAuthenticode(ctx, c, msi, "Postern client installer"); err != nil {
			return Artifact{}, err
		}
	}
	if err := os.MkdirAll(c.OutDir, 0o755); err != nil {
		return Artifact{}, fmt.Errorf("create output directory: %w", err)
	}
	dst := filepath.Join(c.OutDir, name+".msi")
	if err := copyFile(msi, dst); err != nil {
		return Artifact{}, err
	}
	c.logger().Info("built MSI", "file", dst, "wintun", c.WintunDLL != "")
	return Artifact{Kind: "msi", Path: dst}, nil
}

// securePresetProperties adds the preset properties to SecureCustomProperties
// (what WiX's Secure="yes" does, which wixl lacks), so that they reach the
// elevated part of a managed installation.
func securePresetProperties(ctx context.Context, msi string) error {
	msibuild, err := exec.LookPath("msibuild")
	if err != nil {
		return fmt.Errorf("%w: msibuild (apt-get install msitools): %v", ErrTool, err)
	}
	q := "UPDATE `Property` SET `Value` = 'WIX_DOWNGRADE_DETECTED;WIX_UPGRADE_DETECTED;CONTROLLER_URL;SERVICE_KEY_FILE;RANGE4;RANGE6;PREV_CONTROLLER_URL;PREV_SERVICE_KEY_FILE;PREV_RANGE4;PREV_RANGE6' WHERE `Property` = 'SecureCustomProperties'"
	if out, err := exec.CommandContext(ctx, msibuild, msi, "-q", q).CombinedOutput(); err != nil {
		return fmt.Errorf("msibuild (SecureCustomProperties): %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}
