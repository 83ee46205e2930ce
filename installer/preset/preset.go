// Package preset reads the settings IT presets when it deploys the Postern
// client: the controller URL and, for headless machines, the path of a
// service-account key. The installers write them; posternd and postern read
// them through Load.
//
// Where they live:
//   - Windows (MSI properties CONTROLLER_URL and SERVICE_KEY_FILE):
//     HKLM\SOFTWARE\Postern, REG_SZ values ControllerURL and ServiceKeyFile
//     (64-bit registry view); MSI properties RANGE4 and RANGE6 write Range4
//     and Range6 there.
//   - Linux (.deb/.rpm): /etc/default/posternd, variables
//     POSTERN_CONTROLLER_URL, POSTERN_SERVICE_KEY, POSTERN_RANGE4 and
//     POSTERN_RANGE6; systemd passes them to
//     posternd as environment variables.
//   - Everywhere: the environment variables POSTERN_CONTROLLER_URL and
//     POSTERN_SERVICE_KEY take precedence over the stored values.
package preset

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Environment variables (and /etc/default/posternd keys) of the presets.
const (
	EnvControllerURL = "POSTERN_CONTROLLER_URL"
	EnvServiceKey    = "POSTERN_SERVICE_KEY"
	EnvRange4        = "POSTERN_RANGE4" // synthetic IPv4 range (posternd --range4)
	EnvRange6        = "POSTERN_RANGE6" // synthetic IPv6 range (posternd --range6)
)

// Registry location the MSI writes (HKLM, 64-bit view).
const (
	RegistryKey       = `SOFTWARE\Postern`
	RegControllerURL  = "ControllerURL"
	RegServiceKeyFile = "ServiceKeyFile"
	RegRange4         = "Range4"
	RegRange6         = "Range6"
)

// DefaultsFile is the Linux settings file the client package installs.
const DefaultsFile = "/etc/default/posternd"

// Preset is what IT configured at deployment; empty fields were not preset.
type Preset struct {
	ControllerURL  string
	ServiceKeyFile string
	// Range4 and Range6 are the synthetic address ranges (CIDR) posternd
	// uses unless --range4/--range6 are given.
	Range4, Range6 string
}

// Load returns the presets of this machine: environment variables first, then
// the OS's stored values (registry on Windows, /etc/default/posternd on Linux).
// A machine without presets yields an empty Preset and no error.
func Load() (Preset, error) {
	p, err := loadStored()
	if err != nil {
		return Preset{}, err
	}
	if v := os.Getenv(EnvControllerURL); v != "" {
		p.ControllerURL = v
	}
	if v := os.Getenv(EnvServiceKey); v != "" {
		p.ServiceKeyFile = v
	}
	if v := os.Getenv(EnvRange4); v != "" {
		p.Range4 = v
	}
	if v := os.Getenv(EnvRange6); v != "" {
		p.Range6 = v
	}
	return p, nil
}

// loadDefaultsFile reads POSTERN_* assignments from a shell-style environment
// file; a missing file is no error.
func loadDefaultsFile(path string) (Preset, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Preset{}, nil
	}
	if err != nil {
		return Preset{}, fmt.Errorf("read presets %s: %w", path, err)
	}
	defer f.Close()
	vars, err := parseEnvFile(f)
	if err != nil {
		return Preset{}, fmt.Errorf("read presets %s: %w", path, err)
	}
	return Preset{ControllerURL: vars[EnvControllerURL], ServiceKeyFile: vars[EnvServiceKey], Range4: vars[EnvRange4], Range6: vars[EnvRange6]}, nil
}

// parseEnvFile parses KEY=VALUE lines as systemd's EnvironmentFile= does for
// the simple cases: comments, blank lines, optional single or double quotes.
func parseEnvFile(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want KEY=VALUE", n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			u, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			v = u
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
