//go:build !windows && !darwin

package sso

import "os/exec"

// browserCommand opens a URL with the desktop's handler (XDG).
func browserCommand(u string) *exec.Cmd { return exec.Command("xdg-open", u) }
