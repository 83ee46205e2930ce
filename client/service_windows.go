package client

import (
	"context"
	"fmt"

	"golang.org/x/sys/windows/svc"
)

// IsService reports whether the Windows service control manager started
// this process (posternd installed by the MSI as the service "posternd").
func IsService() bool {
	ok, err := svc.IsWindowsService()
	return err == nil && ok
}

// RunService runs run under the service control manager as service name:
// Stop and Shutdown cancel run's context, and the service reports stopped
// when run returns. It returns false, without running anything, when the
// process is not a service.
func RunService(name string, run func(ctx context.Context) error) (bool, error) {
	if !IsService() {
		return false, nil
	}
	h := &serviceHandler{run: run}
	if err := svc.Run(name, h); err != nil {
		return true, fmt.Errorf("run as service %s: %w", name, err)
	}
	return true, h.err
}

type serviceHandler struct {
	run func(ctx context.Context) error
	err error
}

// Execute implements svc.Handler.
func (h *serviceHandler) Execute(_ []string, reqs <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	for {
		select {
		case err := <-done:
			h.err = err
			if err != nil {
				return true, 1 // service-specific exit code: failed
			}
			return false, 0
		case r := <-reqs:
			switch r.Cmd {
			case svc.Interrogate:
				status <- r.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending}
				cancel()
				h.err = <-done
				return false, 0
			}
		}
	}
}
