package installer

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"text/template"
	"unicode"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"postern.dev/postern/packaging"
)

// readSecretKey loads the OpenPGP signing key and checks that it can sign with
// the given passphrase, so that a wrong key or passphrase fails before any
// package is written.
func readSecretKey(k GPGKey) (*openpgp.Entity, error) {
	raw, err := os.ReadFile(k.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("read OpenPGP key %s: %w", k.KeyFile, err)
	}
	var list openpgp.EntityList
	if isASCII(raw) {
		list, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(raw))
	} else {
		list, err = openpgp.ReadKeyRing(bytes.NewReader(raw))
	}
	if err != nil {
		return nil, fmt.Errorf("decode OpenPGP key %s: %w", k.KeyFile, err)
	}
	var key *openpgp.Entity
	for _, e := range list {
		if e.PrivateKey == nil || !e.PrivateKey.CanSign() {
			continue
		}
		if key != nil {
			return nil, fmt.Errorf("%w: %s holds more than one secret signing key; export only one", ErrBadConfig, k.KeyFile)
		}
		key = e
	}
	if key == nil {
		return nil, fmt.Errorf("%w: %s holds no secret signing key (export it with gpg --export-secret-keys --armor KEYID)", ErrBadConfig, k.KeyFile)
	}
	if key.PrivateKey.Encrypted {
		if k.Passphrase == "" {
			return nil, fmt.Errorf("%w: %s is protected by a passphrase; set %s or %s", ErrBadConfig, k.KeyFile, EnvGPGPassphrase, EnvGPGPassphraseFile)
		}
		if err := key.PrivateKey.Decrypt([]byte(k.Passphrase)); err != nil {
			return nil, fmt.Errorf("unlock OpenPGP key %s: %w", k.KeyFile, err)
		}
	}
	return key, nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c > unicode.MaxASCII {
			return false
		}
	}
	return true
}

// KeyID returns the 16-digit upper-case hex ID of the primary key in c.GPG,
// the name debsig-verify uses for its policy and keyring directories.
func KeyID(k GPGKey) (string, error) {
	e, err := readSecretKey(k)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%016X", e.PrimaryKey.KeyId), nil
}

// VerificationFiles are the public halves users need to verify the packages.
type VerificationFiles struct {
	KeyID         string // OpenPGP key ID (16 hex digits)
	ArmoredPubKey string // RPM-GPG-KEY-postern: `rpmkeys --import`
	DebsigPolicy  string // policies/KEYID/postern.pol under the debsig policies dir
	DebsigKeyring string // keyrings/KEYID/postern.gpg under the debsig keyrings dir
	PoliciesDir   string // give to debsig-verify --policies-dir (or copy to /etc/debsig/policies)
	KeyringsDir   string // give to debsig-verify --keyrings-dir (or copy to /usr/share/debsig/keyrings)
}

// WriteVerificationFiles writes the public OpenPGP key (armored, for rpm) and
// the debsig-verify policy and keyring under OutDir/keys and OutDir/debsig.
func WriteVerificationFiles(c *Config) (VerificationFiles, error) {
	var v VerificationFiles
	e, err := readSecretKey(c.GPG)
	if err != nil {
		return v, err
	}
	v.KeyID = fmt.Sprintf("%016X", e.PrimaryKey.KeyId)

	var bin bytes.Buffer
	if err := e.Serialize(&bin); err != nil {
		return v, fmt.Errorf("export public key: %w", err)
	}
	var arm bytes.Buffer
	w, err := armor.Encode(&arm, openpgp.PublicKeyType, map[string]string{"Comment": "Postern package signing key " + v.KeyID})
	if err != nil {
		return v, fmt.Errorf("armor public key: %w", err)
	}
	if _, err := w.Write(bin.Bytes()); err != nil {
		return v, fmt.Errorf("armor public key: %w", err)
	}
	if err := w.Close(); err != nil {
		return v, fmt.Errorf("armor public key: %w", err)
	}

	keys := filepath.Join(c.OutDir, "keys")
	v.PoliciesDir = filepath.Join(c.OutDir, "debsig", "policies")
	v.KeyringsDir = filepath.Join(c.OutDir, "debsig", "keyrings")
	v.ArmoredPubKey = filepath.Join(keys, "RPM-GPG-KEY-postern")
	v.DebsigPolicy = filepath.Join(v.PoliciesDir, v.KeyID, "postern.pol")
	v.DebsigKeyring = filepath.Join(v.KeyringsDir, v.KeyID, "postern.gpg")

	src, err := fs.ReadFile(packaging.Files, "debsig/postern.pol.tmpl")
	if err != nil {
		return v, fmt.Errorf("read debsig policy template: %w", err)
	}
	t, err := template.New("pol").Parse(string(src))
	if err != nil {
		return v, fmt.Errorf("parse debsig policy template: %w", err)
	}
	var pol bytes.Buffer
	if err := t.Execute(&pol, v); err != nil {
		return v, fmt.Errorf("render debsig policy: %w", err)
	}
	for path, data := range map[string][]byte{
		v.ArmoredPubKey: arm.Bytes(),
		filepath.Join(keys, "postern-archive-keyring.gpg"): bin.Bytes(),
		v.DebsigPolicy:  pol.Bytes(),
		v.DebsigKeyring: bin.Bytes(),
	} {
		if err := writeFile(path, data, 0o644); err != nil {
			return v, err
		}
	}
	return v, nil
}

// writeFile writes data atomically, creating parent directories.
func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
