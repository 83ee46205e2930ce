//go:build darwin

package sso

import "os/exec"

// browserCommand opens a URL with Launch Services.
func browserCommand(u string) *exec.Cmd { return exec.Command("open", u) }
