// Package installer builds Postern's signed packages: .deb and .rpm (nfpm), the Windows MSI (wixl, osslsigncode) and the connector's OCI image.
package installer
