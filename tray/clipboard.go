package tray

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// ErrNoClipboard means no clipboard tool was found.
var ErrNoClipboard = errors.New("no clipboard tool found")

// clipboardCommands lists the tools that take the text on stdin, best first.
func clipboardCommands() [][]string {
	switch runtime.GOOS {
	case "windows":
		return [][]string{{"clip"}}
	case "darwin":
		return [][]string{{"pbcopy"}}
	}
	var cmds [][]string
	if os.Getenv("WAYLAND_DISPLAY") != "" {
		cmds = append(cmds, []string{"wl-copy"})
	}
	return append(cmds, []string{"xclip", "-selection", "clipboard"}, []string{"xsel", "--clipboard", "--input"})
}

// CopyToClipboard puts text on the desktop's clipboard.
func CopyToClipboard(text string) error {
	for _, c := range clipboardCommands() {
		if _, err := exec.LookPath(c[0]); err != nil {
			continue
		}
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("copy with %s: %w: %s", c[0], err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return fmt.Errorf("%w (install wl-clipboard, xclip or xsel)", ErrNoClipboard)
}
