package installer

import (
	"context"
	"fmt"
	"strings"
)

// Targets selects what Build produces.
type Targets struct {
	Linux bool // .deb and .rpm of every Linux package (+ verification keys when signed)
	MSI   bool // Windows client MSI
	Image bool // connector OCI image tarball
	Helm  bool // connector Helm chart
	// ConnectorBinaries maps GOARCH to a statically linked connector for the image.
	ConnectorBinaries map[string]string
}

// ParseTargets reads a comma-separated list of "linux", "msi", "oci", "helm"
// or "all".
func ParseTargets(s string) (Targets, error) {
	var t Targets
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "all":
			t.Linux, t.MSI, t.Image, t.Helm = true, true, true, true
		case "linux", "deb", "rpm":
			t.Linux = true
		case "msi", "windows":
			t.MSI = true
		case "oci", "image":
			t.Image = true
		case "helm":
			t.Helm = true
		case "":
		default:
			return t, fmt.Errorf("%w: unknown target %q (want linux, msi, oci, helm or all)", ErrBadConfig, f)
		}
	}
	if !t.Linux && !t.MSI && !t.Image && !t.Helm {
		return t, fmt.Errorf("%w: no target selected", ErrBadConfig)
	}
	return t, nil
}

// Build produces every selected target into c.OutDir. Configuration problems
// (missing keys, wintun, binaries) are reported before anything is built.
func Build(ctx context.Context, c *Config, t Targets) ([]Artifact, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if t.Linux && c.GPG.KeyFile == "" && !c.Unsigned {
		return nil, fmt.Errorf("%w: set %s to an OpenPGP secret key to sign .deb and .rpm packages", ErrNoSigningKey, EnvGPGKeyFile)
	}
	if t.MSI {
		if c.WintunDLL == "" && !c.MSITestMode {
			return nil, ErrNoWintun
		}
		if !c.CodeSign.Configured() && !c.Unsigned {
			return nil, fmt.Errorf("%w: set %s and %s (or %s) to sign the Windows programs and the MSI", ErrNoSigningKey, EnvCodeSignCert, EnvCodeSignKey, EnvCodeSignPKCS12)
		}
	}
	if t.Image && len(t.ConnectorBinaries) == 0 {
		return nil, fmt.Errorf("%w: the connector image needs a static connector binary (--connector-bin amd64=PATH)", ErrBadConfig)
	}
	var out []Artifact
	if t.Linux {
		a, err := BuildLinux(c)
		out = append(out, a...)
		if err != nil {
			return out, err
		}
		if c.GPG.KeyFile != "" {
			v, err := WriteVerificationFiles(c)
			if err != nil {
				return out, err
			}
			out = append(out, Artifact{Kind: "key", Path: v.ArmoredPubKey}, Artifact{Kind: "policy", Path: v.DebsigPolicy})
		}
	}
	if t.MSI {
		a, err := BuildMSI(ctx, c)
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
	if t.Image {
		a, err := BuildConnectorImage(c, t.ConnectorBinaries)
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
	if t.Helm {
		a, err := BuildHelmChart(c)
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
	return out, nil
}
