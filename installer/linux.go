package installer

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/template"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager

	"postern.dev/postern/packaging"
)

// LinuxPackage describes one .deb/.rpm: its programs, its systemd unit and the
// environment file under /etc/default that holds its settings.
type LinuxPackage struct {
	Name        string
	Description string
	Programs    []string // installed in /usr/bin
	Unit        string   // systemd unit file name under packaging/systemd
	DefaultFile string   // file name under packaging/default, installed in /etc/default
	DefaultMode os.FileMode
	// RequiredVars must be non-empty in the /etc/default file before the
	// postinst starts the service (tokens, public URL).
	RequiredVars []string
	// StateDir is the unit's StateDirectory; PurgePaths are removed on purge.
	StateDir   string
	PurgePaths []string
	// Extra files: source under packaging/ -> destination, with mode.
	Extra []ExtraFile
	// RestoreHelper is run by prerm on removal (client only).
	RestoreHelper string
}

// ExtraFile is a packaging file installed at Dest.
type ExtraFile struct {
	Source string // path under packaging/
	Dest   string
	Mode   os.FileMode
}

// LinuxPackages lists the four Linux packages.
func LinuxPackages() []LinuxPackage {
	return []LinuxPackage{
		{
			Name: "postern-client",
			Description: "Postern zero-trust access client\n" +
				"posternd (TUN device, netstack and DNS proxy, run by systemd), the postern\n" +
				"CLI and the postern-tray tray icon (started at desktop login).",
			Programs:      []string{"posternd", "postern", "postern-tray"},
			Unit:          "posternd.service",
			DefaultFile:   "posternd",
			DefaultMode:   0o644,
			StateDir:      "/var/lib/postern",
			PurgePaths:    []string{"/var/lib/postern", "/run/postern"},
			RestoreHelper: "/usr/lib/postern/posternd-restore",
			Extra: []ExtraFile{
				{Source: "xdg/postern-tray.desktop", Dest: "/etc/xdg/autostart/postern-tray.desktop", Mode: 0o644},
				{Source: "xdg/postern-tray.desktop", Dest: "/usr/share/applications/postern-tray.desktop", Mode: 0o644},
				{Source: "scripts/posternd-restore", Dest: "/usr/lib/postern/posternd-restore", Mode: 0o755},
			},
		},
		{
			Name: "postern-connector",
			Description: "Postern connector\n" +
				"Gives authorized Postern clients access to the resources of a private\n" +
				"network over outbound connections only.",
			Programs:     []string{"postern-connector"},
			Unit:         "postern-connector.service",
			DefaultFile:  "postern-connector",
			DefaultMode:  0o600,
			RequiredVars: []string{"POSTERN_CONNECTOR_TOKEN"},
			StateDir:     "/var/lib/postern-connector",
			PurgePaths:   []string{"/var/lib/postern-connector", "/var/lib/private/postern-connector"},
		},
		{
			Name: "postern-relay",
			Description: "Postern relay\n" +
				"Signaling, STUN and relaying of end-to-end encrypted traffic between\n" +
				"Postern clients and connectors.",
			Programs:     []string{"postern-relay"},
			Unit:         "postern-relay.service",
			DefaultFile:  "postern-relay",
			DefaultMode:  0o600,
			RequiredVars: []string{"POSTERN_RELAY_TOKEN", "POSTERN_RELAY_PUBLIC_IP"},
			StateDir:     "/var/lib/postern-relay",
			PurgePaths:   []string{"/var/lib/postern-relay", "/var/lib/private/postern-relay"},
		},
		{
			Name: "postern-controller",
			Description: "Postern controller\n" +
				"Identity, policy, admin API and web console of a Postern deployment;\n" +
				"signs connection tokens.",
			Programs:     []string{"postern-controller"},
			Unit:         "postern-controller.service",
			DefaultFile:  "postern-controller",
			DefaultMode:  0o644,
			RequiredVars: []string{"POSTERN_CONTROLLER_PUBLIC_URL"},
			StateDir:     "/var/lib/postern-controller",
			PurgePaths:   []string{"/var/lib/postern-controller", "/var/lib/private/postern-controller"},
		},
	}
}

// UnitNames lists every systemd unit shipped, as paths under packaging/.
func UnitNames() []string {
	var out []string
	for _, p := range LinuxPackages() {
		out = append(out, "systemd/"+p.Unit)
	}
	return out
}

// stageFile copies a packaging file into the staging directory and returns its path.
func stageFile(stage, name string) (string, error) {
	b, err := fs.ReadFile(packaging.Files, name)
	if err != nil {
		return "", fmt.Errorf("read packaging file %s: %w", name, err)
	}
	dst := filepath.Join(stage, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("stage %s: %w", name, err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return "", fmt.Errorf("stage %s: %w", name, err)
	}
	return dst, nil
}

// renderScripts renders the maintainer scripts of p into stage/scripts/<name>/.
func renderScripts(stage string, p LinuxPackage) (nfpm.Scripts, error) {
	var s nfpm.Scripts
	dir := filepath.Join(stage, "rendered", p.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return s, fmt.Errorf("stage scripts of %s: %w", p.Name, err)
	}
	out := map[string]*string{"postinst": &s.PostInstall, "prerm": &s.PreRemove, "postrm": &s.PostRemove}
	for name, field := range out {
		src, err := fs.ReadFile(packaging.Files, "scripts/"+name+".tmpl")
		if err != nil {
			return s, fmt.Errorf("read %s template: %w", name, err)
		}
		t, err := template.New(name).Funcs(template.FuncMap{"join": strings.Join}).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return s, fmt.Errorf("parse %s template: %w", name, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, p); err != nil {
			return s, fmt.Errorf("render %s of %s: %w", name, p.Name, err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, buf.Bytes(), 0o755); err != nil {
			return s, fmt.Errorf("write %s of %s: %w", name, p.Name, err)
		}
		*field = path
	}
	return s, nil
}

var (
	releaseVersionRe  = regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?([-+~][0-9A-Za-z.~+-]*)?$`)
	describeVersionRe = regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+)-([0-9]+)-g([0-9a-f]+)(-dirty)?$`)
	nonVersionChars   = regexp.MustCompile(`[^0-9A-Za-z.-]+`)
)

// packageVersion turns a build version into one dpkg and rpm accept and order
// correctly: a leading "v" is dropped; `git describe` output past a tag
// (1.2.0-3-gabc123) becomes 1.2.0+git.3.gabc123, sorting after 1.2.0; anything
// that is not a version (a bare hash like 1f145d5-dirty) becomes 0.0.0 with
// the hash as build metadata.
func packageVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if m := describeVersionRe.FindStringSubmatch(v); m != nil {
		out := m[1] + "+git." + m[2] + ".g" + m[3]
		if m[4] != "" {
			out += ".dirty"
		}
		return out
	}
	if releaseVersionRe.MatchString(v) {
		return v
	}
	return "0.0.0+git." + strings.Trim(nonVersionChars.ReplaceAllString(v, "."), ".")
}

func (c *Config) nfpmInfo(stage string, p LinuxPackage) (*nfpm.Info, error) {
	var contents files.Contents
	for _, prog := range p.Programs {
		src := filepath.Join(c.BinDir, prog)
		if st, err := os.Stat(src); err != nil || st.IsDir() {
			return nil, fmt.Errorf("%w: %s (package %s) not found in %s; run `make build` first", ErrMissingBinary, prog, p.Name, c.BinDir)
		}
		contents = append(contents, &files.Content{
			Source: src, Destination: "/usr/bin/" + prog,
			FileInfo: &files.ContentFileInfo{Mode: 0o755, Owner: "root", Group: "root"},
		})
	}
	unit, err := stageFile(stage, "systemd/"+p.Unit)
	if err != nil {
		return nil, err
	}
	contents = append(contents, &files.Content{
		Source: unit, Destination: "/usr/lib/systemd/system/" + p.Unit,
		FileInfo: &files.ContentFileInfo{Mode: 0o644, Owner: "root", Group: "root"},
	})
	def, err := stageFile(stage, "default/"+p.DefaultFile)
	if err != nil {
		return nil, err
	}
	contents = append(contents, &files.Content{
		Source: def, Destination: "/etc/default/" + p.DefaultFile, Type: files.TypeConfigNoReplace,
		FileInfo: &files.ContentFileInfo{Mode: p.DefaultMode, Owner: "root", Group: "root"},
	})
	for _, x := range p.Extra {
		src, err := stageFile(stage, x.Source)
		if err != nil {
			return nil, err
		}
		contents = append(contents, &files.Content{
			Source: src, Destination: x.Dest,
			FileInfo: &files.ContentFileInfo{Mode: x.Mode, Owner: "root", Group: "root"},
		})
	}
	scripts, err := renderScripts(stage, p)
	if err != nil {
		return nil, err
	}
	summary, rest, _ := strings.Cut(p.Description, "\n")
	description, vendor := p.Description, "Postern"
	if c.IsDevBuild() {
		summary += " (DEVELOPMENT BUILD)"
		description = summary + "\n" + fmt.Sprintf(devBuildNote, c.DevKeysDir) + "\n" + rest
		vendor = devVendor
	}
	info := &nfpm.Info{
		Name:        p.Name,
		Arch:        c.Arch,
		Platform:    "linux",
		Version:     packageVersion(c.Version),
		Release:     "1",
		Section:     "net",
		Priority:    "optional",
		Maintainer:  c.Maintainer,
		Description: description,
		Vendor:      vendor,
		Homepage:    c.Homepage,
		License:     "Apache-2.0",
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts:  scripts,
			RPM:      nfpm.RPM{Summary: summary, Group: "Applications/Internet", Compression: "gzip:6"},
			Deb:      nfpm.Deb{Compression: "gzip:6"},
		},
	}
	return nfpm.WithDefaults(info), nil
}

// BuildLinux builds the .deb and .rpm of every Linux package into OutDir,
// signed with c.GPG unless c.Unsigned.
func BuildLinux(c *Config) ([]Artifact, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.GPG.KeyFile == "" && !c.Unsigned {
		return nil, fmt.Errorf("%w: set %s to an OpenPGP secret key to sign .deb and .rpm packages (or build unsigned for development)", ErrNoSigningKey, EnvGPGKeyFile)
	}
	var keyID *string
	if c.GPG.KeyFile != "" {
		if _, err := readSecretKey(c.GPG); err != nil {
			return nil, err
		}
		if c.GPG.KeyID != "" {
			id := c.GPG.KeyID
			keyID = &id
		}
	}
	if err := os.MkdirAll(c.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	stage, err := os.MkdirTemp("", "postern-pkg-")
	if err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	defer os.RemoveAll(stage)

	// Compression dominates: build the packages in parallel, one per CPU.
	type job struct {
		pkg    LinuxPackage
		format string
	}
	var jobs []job
	known := map[string]bool{}
	for _, p := range LinuxPackages() {
		known[p.Name] = true
	}
	for _, name := range c.Packages {
		if !known[name] {
			return nil, fmt.Errorf("%w: unknown package %q", ErrBadConfig, name)
		}
	}
	for _, p := range LinuxPackages() {
		if len(c.Packages) > 0 && !slices.Contains(c.Packages, p.Name) {
			continue
		}
		for _, format := range []string{"deb", "rpm"} {
			jobs = append(jobs, job{p, format})
		}
	}
	results := make([]Artifact, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, max(1, runtime.NumCPU()))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], errs[i] = c.buildOne(stage, j.pkg, j.format, keyID)
		}()
	}
	wg.Wait()
	var out []Artifact
	for i := range jobs {
		if errs[i] != nil {
			return out, errs[i]
		}
		out = append(out, results[i])
	}
	return out, nil
}

func (c *Config) buildOne(stage string, p LinuxPackage, format string, keyID *string) (Artifact, error) {
	info, err := c.nfpmInfo(filepath.Join(stage, p.Name+"-"+format), p)
	if err != nil {
		return Artifact{}, err
	}
	if c.GPG.KeyFile != "" {
		sig := nfpm.PackageSignature{KeyFile: c.GPG.KeyFile, KeyID: keyID, KeyPassphrase: c.GPG.Passphrase}
		info.Deb.Signature = nfpm.DebSignature{PackageSignature: sig, Type: "origin"}
		info.RPM.Signature = nfpm.RPMSignature{PackageSignature: sig}
	}
	path, err := c.writePackage(format, info)
	if err != nil {
		return Artifact{}, fmt.Errorf("build %s %s: %w", p.Name, format, err)
	}
	c.logger().Info("built package", "file", path)
	return Artifact{Kind: format, Path: path}, nil
}

func (c *Config) writePackage(format string, info *nfpm.Info) (string, error) {
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	info.Target = ""
	name := pkgr.ConventionalFileName(info)
	if c.Unsigned {
		ext := filepath.Ext(name)
		name = strings.TrimSuffix(name, ext) + "-unsigned" + ext
	} else if c.IsDevBuild() {
		ext := filepath.Ext(name)
		name = strings.TrimSuffix(name, ext) + devPackageSuffix + ext
	}
	path := filepath.Join(c.OutDir, name)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", tmp, err)
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("rename %s: %w", path, err)
	}
	return path, nil
}
