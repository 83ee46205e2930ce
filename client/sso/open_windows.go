//go:build windows

package sso

import "os/exec"

// browserCommand opens a URL with the shell's default handler.
func browserCommand(u string) *exec.Cmd {
	return exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
}
