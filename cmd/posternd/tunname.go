package main

import (
	"fmt"
	"regexp"
	"strings"
)

var utunName = regexp.MustCompile(`^utun[0-9]*$`)

// checkTUNName refuses a --tun name the platform's TUN layer cannot create,
// before anything is configured: macOS only creates utun devices ("utun"
// lets the kernel pick the number), Linux names are at most 15 bytes.
func checkTUNName(goos, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("--tun: empty device name")
	case goos == "darwin" && !utunName.MatchString(name):
		return fmt.Errorf("--tun %q: macOS only creates utun devices; use --tun utun (the next free utunN) or --tun utunN", name)
	case goos == "linux" && len(name) > 15:
		return fmt.Errorf("--tun %q: Linux interface names are at most 15 bytes", name)
	case goos != "windows" && strings.ContainsAny(name, "/ \t\n:"):
		return fmt.Errorf("--tun %q: a device name cannot contain '/', ':' or spaces", name)
	}
	return nil
}
