// Package version holds the build's version string, set at link time with
// -ldflags "-X postern.dev/postern/version.Version=...".
package version

// Version of this build.
var Version = "0.1.0-dev"
