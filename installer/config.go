package installer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Sentinel errors of this package.
var (
	// ErrNoWintun is returned when a release MSI is requested without WINTUN_DLL.
	ErrNoWintun = errors.New("WINTUN_DLL is not set: wintun.dll is not redistributed by any package registry, " +
		"so a release MSI needs its path (download it from https://www.wintun.net/, check its signature, " +
		"then set WINTUN_DLL=/path/to/amd64/wintun.dll); to build a clearly labelled test MSI without it, " +
		"set POSTERN_MSI_TEST=1")
	// ErrNoSigningKey is returned when signing is required but no key is configured.
	ErrNoSigningKey = errors.New("no signing key configured")
	// ErrBadConfig is returned for an invalid build configuration.
	ErrBadConfig = errors.New("invalid packaging configuration")
	// ErrMissingBinary is returned when a program the package needs was not built.
	ErrMissingBinary = errors.New("program binary missing")
	// ErrTool is returned when an external tool (wixl, osslsigncode) is missing.
	ErrTool = errors.New("required tool missing")
)

// Environment variables read by ConfigFromEnv.
const (
	EnvGPGKeyFile        = "POSTERN_GPG_KEY_FILE"        // OpenPGP secret key (armored or binary) for .deb/.rpm
	EnvGPGKeyID          = "POSTERN_GPG_KEY_ID"          // optional: hex key ID of the signing (sub)key
	EnvGPGPassphrase     = "POSTERN_GPG_PASSPHRASE"      // passphrase of that key, if any
	EnvGPGPassphraseFile = "POSTERN_GPG_PASSPHRASE_FILE" // or a file holding it
	EnvCodeSignCert      = "POSTERN_CODESIGN_CERT"       // PEM certificate chain (leaf first) for Authenticode
	EnvCodeSignKey       = "POSTERN_CODESIGN_KEY"        // PEM private key for Authenticode
	EnvCodeSignPKCS12    = "POSTERN_CODESIGN_PKCS12"     // or a PKCS#12 bundle instead of CERT+KEY
	EnvCodeSignPass      = "POSTERN_CODESIGN_PASSWORD"   // password of the key or bundle, if any
	EnvCodeSignPassFile  = "POSTERN_CODESIGN_PASSWORD_FILE"
	EnvTimestampURL      = "POSTERN_CODESIGN_TIMESTAMP_URL" // optional RFC 3161 timestamp server (no default)
	EnvWintunDLL         = "WINTUN_DLL"                     // amd64 wintun.dll for the release MSI
	EnvMSITest           = "POSTERN_MSI_TEST"               // "1": allow a labelled test MSI without wintun.dll
)

// GPGKey locates the OpenPGP key that signs .deb and .rpm packages.
type GPGKey struct {
	KeyFile    string // secret key, ASCII-armored or binary
	KeyID      string // optional hex key ID (16 digits) of the key to sign with
	Passphrase string
}

// CodeSignKey locates the Authenticode key that signs the Windows programs and the MSI.
type CodeSignKey struct {
	CertFile     string // PEM chain, leaf first
	KeyFile      string // PEM private key
	PKCS12File   string // alternative to CertFile+KeyFile
	Password     string
	TimestampURL string // optional; none by default
}

// Configured reports whether a key was given.
func (k CodeSignKey) Configured() bool {
	return k.PKCS12File != "" || (k.CertFile != "" && k.KeyFile != "")
}

// Config describes one packaging run.
type Config struct {
	Version   string // product version, e.g. "1.4.2" or a git describe string
	Arch      string // GOARCH of the Linux binaries and packages ("amd64", "arm64")
	BinDir    string // Linux programs built for Arch (posternd, postern, postern-tray, postern-connector, postern-relay, postern-controller)
	WinBinDir string // Windows amd64 programs (posternd.exe, postern.exe, postern-tray.exe)
	OutDir    string // where packages are written (created if missing)

	GPG      GPGKey
	CodeSign CodeSignKey

	// WintunDLL is the path of the amd64 wintun.dll shipped next to posternd.exe.
	WintunDLL string
	// MSITestMode allows an MSI without wintun.dll; it is named and titled as a test build.
	MSITestMode bool
	// Unsigned allows packages without signatures (development only); their
	// file names carry "-unsigned".
	Unsigned bool
	// DevKeysDir is set (by UseDevKeys) when the packages are signed with
	// throwaway development keys from that directory; their file names carry
	// "-devkey" and their metadata says DEVELOPMENT BUILD.
	DevKeysDir string

	// Packages restricts the Linux packages built to these names (all when empty).
	Packages []string

	// Maintainer and Homepage go into package metadata.
	Maintainer string
	Homepage   string

	Log *slog.Logger
}

// ConfigFromEnv fills the key locations and the wintun path from the environment
// variables named by the Env* constants.
func ConfigFromEnv(c *Config) error {
	c.GPG.KeyFile = firstNonEmpty(c.GPG.KeyFile, os.Getenv(EnvGPGKeyFile))
	c.GPG.KeyID = firstNonEmpty(c.GPG.KeyID, os.Getenv(EnvGPGKeyID))
	if c.GPG.Passphrase == "" {
		p, err := secretFromEnv(EnvGPGPassphrase, EnvGPGPassphraseFile)
		if err != nil {
			return err
		}
		c.GPG.Passphrase = p
	}
	c.CodeSign.CertFile = firstNonEmpty(c.CodeSign.CertFile, os.Getenv(EnvCodeSignCert))
	c.CodeSign.KeyFile = firstNonEmpty(c.CodeSign.KeyFile, os.Getenv(EnvCodeSignKey))
	c.CodeSign.PKCS12File = firstNonEmpty(c.CodeSign.PKCS12File, os.Getenv(EnvCodeSignPKCS12))
	c.CodeSign.TimestampURL = firstNonEmpty(c.CodeSign.TimestampURL, os.Getenv(EnvTimestampURL))
	if c.CodeSign.Password == "" {
		p, err := secretFromEnv(EnvCodeSignPass, EnvCodeSignPassFile)
		if err != nil {
			return err
		}
		c.CodeSign.Password = p
	}
	c.WintunDLL = firstNonEmpty(c.WintunDLL, os.Getenv(EnvWintunDLL))
	if v := os.Getenv(EnvMSITest); v == "1" || v == "true" {
		c.MSITestMode = true
	}
	return nil
}

func secretFromEnv(valueVar, fileVar string) (string, error) {
	if v := os.Getenv(valueVar); v != "" {
		return v, nil
	}
	f := os.Getenv(fileVar)
	if f == "" {
		return "", nil
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return "", fmt.Errorf("read %s (%s): %w", fileVar, f, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (c *Config) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

// validate checks the fields every target needs.
func (c *Config) validate() error {
	if c.Version == "" {
		return fmt.Errorf("%w: version is empty", ErrBadConfig)
	}
	if strings.ContainsAny(c.Version, " \t\n/\\\"'<>&") {
		return fmt.Errorf("%w: version %q contains characters not allowed in a package version", ErrBadConfig, c.Version)
	}
	if c.OutDir == "" {
		return fmt.Errorf("%w: output directory is empty", ErrBadConfig)
	}
	switch c.Arch {
	case "amd64", "arm64":
	case "":
		c.Arch = "amd64"
	default:
		return fmt.Errorf("%w: architecture %q (want amd64 or arm64)", ErrBadConfig, c.Arch)
	}
	if c.Maintainer == "" {
		c.Maintainer = "Postern <packages@postern.dev>"
	}
	if c.Homepage == "" {
		c.Homepage = "https://postern.dev"
	}
	return nil
}

// Artifact is one file a build produced.
type Artifact struct {
	Kind string // "deb", "rpm", "msi", "oci", "helm", "key", "policy"
	Path string
}
