// Package packaging embeds the files Postern's installers ship: systemd units,
// /etc/default environment files, the XDG autostart entry, maintainer script
// templates, the WiX source of the Windows MSI, the debsig-verify policy
// template and the connector's Helm chart. The installer package renders and
// packs them; nothing here runs on its own.
package packaging

import "embed"

// Files holds every packaging file under its path relative to this directory,
// e.g. "systemd/posternd.service" or "helm/postern-connector/Chart.yaml".
//
//go:embed systemd default xdg scripts windows debsig all:helm
var Files embed.FS
