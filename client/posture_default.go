//go:build !linux && !windows && !darwin

package client

import (
	"context"

	"postern.dev/postern/controlapi"
)

// probePosture has no probes on this OS: it reports no version, no disk
// encryption and no firewall, which satisfies no profile that asks for them.
func probePosture(ctx context.Context) controlapi.PostureReport {
	return controlapi.PostureReport{}
}
