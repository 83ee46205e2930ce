// Package installer builds Postern's signed packages: .deb and .rpm (nfpm), the Windows MSI (wixl, osslsigncode) and the connector's OCI image.
//
// Build(ctx, cfg, targets) is the entry point used by cmd/postern-pkg and
// `make packages`: BuildLinux makes postern-client, postern-connector,
// postern-relay and postern-controller as .deb (debsigs "_gpgorigin"
// signature) and .rpm (OpenPGP header signature); WriteVerificationFiles
// exports the public key and the debsig-verify policy; BuildMSI makes the
// x64 client MSI with posternd as an auto-start service and Authenticode
// signatures (SHA-256) on every executable and on the MSI; BuildConnectorImage
// writes the connector's OCI image layout tarball; BuildHelmChart packages the
// connector's chart. The shipped files (units, /etc/default files, maintainer
// script templates, WiX source, chart) are embedded from postern.dev/postern/packaging.
// Signing keys come from paths or environment variables (ConfigFromEnv);
// see docs/packaging.md.
package installer
