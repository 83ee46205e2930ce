//go:build darwin || windows

package platform

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// run executes an OS tool (ifconfig, route, netsh) and returns its output
// in the error when it fails.
func run(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
