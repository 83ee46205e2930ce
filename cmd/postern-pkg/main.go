// Command postern-pkg builds Postern's signed packages (.deb, .rpm, the Windows
// MSI, the connector's OCI image and Helm chart) from already built programs.
// It is a build tool used by `make packages`; signing keys come from the
// environment (see docs/packaging.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"postern.dev/postern/installer"
	"postern.dev/postern/version"
)

func main() {
	var (
		c         installer.Config
		targets   = flag.String("targets", "all", "comma-separated: linux (deb+rpm), msi, oci, helm, all")
		only      = flag.String("packages", "", "comma-separated Linux packages to build (default: all four)")
		connector = flag.String("connector-bin", "", "static connector binaries for the image: GOARCH=PATH[,GOARCH=PATH]")
	)
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

	if err := run(&c, *targets, *connector); err != nil {
		fmt.Fprintln(os.Stderr, "postern-pkg:", err)
		os.Exit(1)
	}
}

func run(c *installer.Config, targets, connector string) error {
	if err := installer.ConfigFromEnv(c); err != nil {
		return err
	}
	t, err := installer.ParseTargets(targets)
	if err != nil {
		return err
	}
	if connector != "" {
		t.ConnectorBinaries = map[string]string{}
		for _, kv := range strings.Split(connector, ",") {
			arch, path, ok := strings.Cut(kv, "=")
			if !ok || arch == "" || path == "" {
				return fmt.Errorf("--connector-bin %q: want GOARCH=PATH", kv)
			}
			t.ConnectorBinaries[arch] = path
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	arts, err := installer.Build(ctx, c, t)
	for _, a := range arts {
		fmt.Printf("%-6s %s\n", a.Kind, a.Path)
	}
	return err
}
