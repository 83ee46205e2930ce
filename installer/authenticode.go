package installer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// SignAuthenticode signs a Windows executable or MSI in place with
// osslsigncode (SHA-256 digest), using c.CodeSign. The signed file replaces the
// original only when signing succeeded.
func SignAuthenticode(ctx context.Context, c *Config, path, description string) error {
	if !c.CodeSign.Configured() {
		return fmt.Errorf("%w: set %s and %s (or %s) to an Authenticode certificate and key", ErrNoSigningKey, EnvCodeSignCert, EnvCodeSignKey, EnvCodeSignPKCS12)
	}
	tool, err := exec.LookPath("osslsigncode")
	if err != nil {
		return fmt.Errorf("%w: osslsigncode (apt-get install osslsigncode): %v", ErrTool, err)
	}
	args := []string{"sign", "-h", "sha256", "-n", description, "-i", c.Homepage}
	if c.CodeSign.PKCS12File != "" {
		args = append(args, "-pkcs12", c.CodeSign.PKCS12File)
	} else {
		args = append(args, "-certs", c.CodeSign.CertFile, "-key", c.CodeSign.KeyFile)
	}
	var passFile string
	if c.CodeSign.Password != "" {
		// -readpass keeps the password off the command line.
		f, err := os.CreateTemp("", "postern-codesign-pass-")
		if err != nil {
			return fmt.Errorf("sign %s: %w", path, err)
		}
		passFile = f.Name()
		defer os.Remove(passFile)
		if _, err := f.WriteString(c.CodeSign.Password); err != nil {
			f.Close()
			return fmt.Errorf("sign %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("sign %s: %w", path, err)
		}
		args = append(args, "-readpass", passFile)
	}
	if c.CodeSign.TimestampURL != "" {
		args = append(args, "-ts", c.CodeSign.TimestampURL)
	}
	out := path + ".signed"
	args = append(args, "-in", path, "-out", out)
	os.Remove(out)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(out)
		return fmt.Errorf("osslsigncode sign %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Rename(out, path); err != nil {
		os.Remove(out)
		return fmt.Errorf("replace %s with its signed copy: %w", path, err)
	}
	return nil
}

// VerifyAuthenticode checks the Authenticode signature of path against the
// CA certificates in caFile with `osslsigncode verify`.
func VerifyAuthenticode(ctx context.Context, path, caFile string) error {
	tool, err := exec.LookPath("osslsigncode")
	if err != nil {
		return fmt.Errorf("%w: osslsigncode: %v", ErrTool, err)
	}
	out, err := exec.CommandContext(ctx, tool, "verify", "-CAfile", caFile, "-in", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("osslsigncode verify %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}
