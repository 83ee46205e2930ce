package platform

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"postern.dev/postern/internal/atomicfile"
)

// dnsStateName is the file, inside the daemon's state directory, that
// records what the OSConfigurator changed, written before each change, so
// that RestoreAfterCrash can undo it after the daemon was killed.
const dnsStateName = "os-dns-backup.json"

// DNS state modes.
const (
	modeResolvConf  = "resolv.conf"
	modeResolved    = "systemd-resolved"
	modeResolverDir = "resolver-dir"
	modeNRPT        = "nrpt"
)

type dnsState struct {
	Mode string `json:"mode"`
	// resolv.conf: the file and its original contents.
	Path     string `json:"path,omitempty"`
	Original []byte `json:"original,omitempty"`
	// systemd-resolved: the link configured.
	IfName  string `json:"ifname,omitempty"`
	IfIndex int    `json:"ifindex,omitempty"`
	// macOS: /etc/resolver files written; Windows: NRPT rule keys.
	Files []string `json:"files,omitempty"`
	Keys  []string `json:"keys,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, dnsStateName) }

// readState returns the saved state, or nil when there is none.
func readState(dir string) (*dnsState, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrDNSState, statePath(dir), err)
	}
	var st dnsState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %s is not valid JSON (%v); restore DNS by hand and delete it", ErrDNSState, statePath(dir), err)
	}
	return &st, nil
}

func writeState(dir string, st *dnsState) error {
	b, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fmt.Errorf("%w: encode: %w", ErrDNSState, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrDNSState, dir, err)
	}
	if err := writeFileAtomic(statePath(dir), b, 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrDNSState, err)
	}
	return nil
}

func removeState(dir string) error {
	if err := os.Remove(statePath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: remove %s: %w", ErrDNSState, statePath(dir), err)
	}
	return nil
}

// writeFileAtomic replaces path through a temporary file in its directory
// (for files Postern owns; never for /etc/resolv.conf, see writeInPlace).
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	return atomicfile.Write(path, b, mode)
}

// writeInPlace rewrites path without replacing the file: /etc/resolv.conf
// may be a bind mount (ip netns exec) or a symlink, and a rename would fail
// there or replace the wrong file. Truncating first would let a reader (the
// resolver of any process in the namespace) see an empty file, so the new
// content is written over the old one first and the file is cut to its
// length afterwards. While the old file was longer, the bytes after the new
// content are blanked in the same write (a comment line). The file is never
// empty or shorter than the shorter version; only while the single write
// copies its bytes (not across a preemption between two system calls, as
// with a truncate first) can a reader catch it half old, half new. A file
// that already holds b is not written at all.
func writeInPlace(path string, b []byte) error {
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	err = overwrite(f, b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// overwrite replaces f's content with b in place: one write of b padded to
// f's current size, then a truncate to len(b).
func overwrite(f *os.File, b []byte) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	buf := padTo(b, st.Size())
	if _, err := f.WriteAt(buf, 0); err != nil {
		return err
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		return err
	}
	return f.Sync()
}

// padTo returns b extended to size bytes with a blank tail the resolver
// ignores: a newline ending b's last line if needed, then a comment line of
// spaces (or an empty line when only one byte is left). b itself when it is
// already that long.
func padTo(b []byte, size int64) []byte {
	pad := size - int64(len(b))
	if pad <= 0 {
		return b
	}
	out := make([]byte, 0, size)
	out = append(out, b...)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		out = append(out, '\n')
		pad--
	}
	switch {
	case pad == 1:
		out = append(out, '\n')
	case pad >= 2:
		out = append(out, '#')
		for i := int64(0); i < pad-2; i++ {
			out = append(out, ' ')
		}
		out = append(out, '\n')
	}
	return out
}

// takeOverDNSState readies stateDir for a new OSConfigurator (every OS's
// NewOSConfigurator calls it first): the configurator records there what it
// changes, so it must be set, and a change a crashed run left behind is
// undone first (RestoreAfterCrash), so that the original is what gets saved.
func takeOverDNSState(stateDir string) error {
	if stateDir == "" {
		return fmt.Errorf("%w: no state directory", ErrDNSConfig)
	}
	return RestoreAfterCrash(stateDir)
}

// RestoreAfterCrash puts back the DNS configuration a previous run left
// changed (it was killed before it could restore it). The daemon calls it at
// start, before NewOSConfigurator. Nothing to do is not an error.
func RestoreAfterCrash(stateDir string) error {
	if stateDir == "" {
		return fmt.Errorf("%w: no state directory", ErrDNSState)
	}
	st, err := readState(stateDir)
	if err != nil || st == nil {
		return err
	}
	if err := restoreState(st); err != nil {
		return err
	}
	return removeState(stateDir)
}

// restoreState undoes what st records, for any mode this OS knows.
func restoreState(st *dnsState) error {
	switch st.Mode {
	case modeResolvConf:
		return restoreResolvConf(st.Path, st.Original)
	default:
		return restoreOS(st)
	}
}
