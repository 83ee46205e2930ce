// Command postern-pkg builds Postern's signed packages (.deb, .rpm, the Windows
// MSI, the connector's OCI image and Helm chart) from already built programs.
// It is a build tool used by `make packages`; signing keys come from the
// environment (see docs/packaging.md). Without keys, --dev-keys DIR signs with
// throwaway development keys kept in DIR and labels every package as a
// development build; --release refuses anything but real keys.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"postern.dev/postern/installer"
	"postern.dev/postern/version"
)

type options struct {
	targets, connector string
	devKeys            string
	release, preflight bool
}

func main() {
	var (
		c    installer.Config
		o    options
		only = flag.String("packages", "", "comma-separated Linux packages to build (default: all four)")
	)
	flag.StringVar(&o.targets, "targets", "all", "comma-separated: linux (deb+rpm), msi, oci, helm, all")
	flag.StringVar(&o.connector, "connector-bin", "", "static connector binaries for the image: GOARCH=PATH[,GOARCH=PATH]")
	flag.StringVar(&o.devKeys, "dev-keys", "", "development only: when no signing key is configured, sign with throwaway keys generated into (and reused from) this directory; packages are labelled DEVELOPMENT BUILD")
	flag.BoolVar(&o.release, "release", false, "release build: refuse unless real signing keys (and wintun.dll for the MSI) are configured")
	flag.BoolVar(&o.preflight, "preflight", false, "only check the key configuration for --targets (what `make packages` runs before building)")
	flag.StringVar(&c.Version, "version", version.Version, "package version")
	flag.StringVar(&c.Arch, "arch", "amd64", "architecture of the Linux programs in --bin (amd64, arm64)")
	flag.StringVar(&c.BinDir, "bin", "bin", "directory with the Linux programs")
	flag.StringVar(&c.WinBinDir, "win-bin", "", "directory with posternd.exe, postern.exe, postern-tray.exe (windows/amd64)")
	flag.StringVar(&c.OutDir, "out", "dist", "output directory")
	flag.StringVar(&c.WintunDLL, "wintun", "", "amd64 wintun.dll for the MSI (default $"+installer.EnvWintunDLL+")")
	flag.BoolVar(&c.MSITestMode, "msi-test", false, "allow a test MSI without wintun.dll, labelled as such (also $"+installer.EnvMSITest+"=1)")
	flag.BoolVar(&c.Unsigned, "unsigned", false, "development only: build without signing keys (file names say -unsigned)")
	flag.Parse()
	if *only != "" {
		c.Packages = strings.Split(*only, ",")
	}
	c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))

	if err := run(&c, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "postern-pkg:", err)
		os.Exit(1)
	}
}

// devBanner is printed (to stderr, around the build) whenever development
// keys sign the packages, so that nobody mistakes them for a release.
const devBanner = `
################################################################################
#  DEVELOPMENT BUILD: no signing keys configured.
#  Packages are signed with THROWAWAY keys from %s
#  and labelled "-devkey" / DEVELOPMENT BUILD. Do not publish them.
#  Release: make packages RELEASE=1 with POSTERN_GPG_KEY_FILE,
#  POSTERN_CODESIGN_* and WINTUN_DLL set (docs/packaging.md).
################################################################################
`

func run(c *installer.Config, o options, stdout, stderr io.Writer) error {
	if err := installer.ConfigFromEnv(c); err != nil {
		return err
	}
	t, err := installer.ParseTargets(o.targets)
	if err != nil {
		return err
	}
	if o.connector != "" {
		t.ConnectorBinaries = map[string]string{}
		for _, kv := range strings.Split(o.connector, ",") {
			arch, path, ok := strings.Cut(kv, "=")
			if !ok || arch == "" || path == "" {
				return fmt.Errorf("--connector-bin %q: want GOARCH=PATH", kv)
			}
			t.ConnectorBinaries[arch] = path
		}
	}
	switch {
	case o.release && o.devKeys != "":
		return fmt.Errorf("--release and --dev-keys exclude each other")
	case o.release:
		if err := installer.CheckRelease(c, t); err != nil {
			return err
		}
	case o.devKeys != "":
		dev, err := installer.UseDevKeys(c, t, o.devKeys)
		if err != nil {
			return err
		}
		if dev {
			fmt.Fprintf(stderr, devBanner, o.devKeys)
		}
	}
	if o.preflight {
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	arts, err := installer.Build(ctx, c, t)
	for _, a := range arts {
		fmt.Fprintf(stdout, "%-6s %s\n", a.Kind, a.Path)
	}
	if err == nil && c.IsDevBuild() {
		fmt.Fprintf(stderr, "postern-pkg: WARNING: DEVELOPMENT BUILD signed with throwaway keys from %s; not for release\n", c.DevKeysDir)
	}
	return err
}
