package platform

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

const (
	resolverDir    = "/etc/resolver"
	resolverMarker = "# Added by posternd (Postern); removed when it stops."
)

// resolverFiles configures macOS split DNS with one /etc/resolver/<domain>
// file per match domain, each marked as Postern's so cleanup removes only
// Postern's files.
type resolverFiles struct {
	stateDir string
	dir      string

	mu    sync.Mutex
	files []string
}

// NewOSConfigurator returns the macOS DNS configurator (/etc/resolver).
func NewOSConfigurator(tunName, stateDir string) (OSConfigurator, error) {
	if err := takeOverDNSState(stateDir); err != nil {
		return nil, err
	}
	return &resolverFiles{stateDir: stateDir, dir: resolverDir}, nil
}

// OriginalResolvers reads /etc/resolv.conf, which macOS keeps in line with
// the primary network service's resolvers.
func (c *resolverFiles) OriginalResolvers() ([]netip.AddrPort, []string, error) {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read /etc/resolv.conf: %w", ErrDNSConfig, err)
	}
	s, search, _ := parseResolvConf(b)
	return s, search, nil
}

func (c *resolverFiles) SupportsSplitDNS() bool { return true }

func (c *resolverFiles) Set(cfg DNSConfig) error {
	if len(cfg.Nameservers) == 0 {
		return fmt.Errorf("%w: no nameserver", ErrDNSConfig)
	}
	var body bytes.Buffer
	body.WriteString(resolverMarker + "\n")
	for _, ns := range cfg.Nameservers {
		fmt.Fprintf(&body, "nameserver %s\n", ns)
	}
	var want []string
	for _, d := range cfg.MatchDomains {
		d = strings.TrimSuffix(strings.ToLower(d), ".")
		if d == "" || strings.ContainsAny(d, "/\\") || d == "." || d == ".." {
			return fmt.Errorf("%w: %q is not a domain", ErrDNSConfig, d)
		}
		want = append(want, filepath.Join(c.dir, d))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	all := append(slices.Clone(c.files), want...)
	slices.Sort(all)
	all = slices.Compact(all)
	// Record every file that may exist before writing any.
	if err := writeState(c.stateDir, &dnsState{Mode: modeResolverDir, Files: all}); err != nil {
		return err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("%w: create %s: %w", ErrDNSConfig, c.dir, err)
	}
	var written []string
	for _, f := range want {
		if b, err := os.ReadFile(f); err == nil && !bytes.HasPrefix(b, []byte(resolverMarker)) {
			slog.Warn("dns: not replacing a resolver file Postern did not write", "file", f)
			continue
		}
		if err := writeFileAtomic(f, body.Bytes(), 0o644); err != nil {
			return fmt.Errorf("%w: %w", ErrDNSConfig, err)
		}
		written = append(written, f)
	}
	for _, f := range c.files {
		if !slices.Contains(want, f) {
			removeMarked(f)
		}
	}
	c.files = written
	return writeState(c.stateDir, &dnsState{Mode: modeResolverDir, Files: written})
}

func (c *resolverFiles) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, f := range c.files {
		if err := removeMarked(f); err != nil {
			errs = append(errs, err)
		}
	}
	c.files = nil
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrDNSConfig, errors.Join(errs...))
	}
	return removeState(c.stateDir)
}

// removeMarked deletes f if it carries Postern's marker.
func removeMarked(f string) error {
	b, err := os.ReadFile(f)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", f, err)
	}
	if !bytes.HasPrefix(b, []byte(resolverMarker)) {
		return nil
	}
	if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", f, err)
	}
	return nil
}

func restoreOS(st *dnsState) error {
	if st.Mode != modeResolverDir {
		return fmt.Errorf("%w: unknown mode %q on macOS", ErrDNSState, st.Mode)
	}
	var errs []error
	for _, f := range st.Files {
		if filepath.Dir(f) != resolverDir {
			continue // never touch anything outside /etc/resolver
		}
		if err := removeMarked(f); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrDNSConfig, errors.Join(errs...))
	}
	return nil
}
