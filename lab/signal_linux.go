package lab

import (
	"fmt"
	"syscall"
)

// Signal sends sig to a running program of the lab (by the pid the lab
// started it with), e.g. SIGHUP to make a connector rotate its certificate
// or SIGSTOP/SIGCONT to suspend and resume a client daemon as a laptop lid
// would.
func (l *Lab) Signal(name string, sig syscall.Signal) error {
	p, err := l.Proc(name)
	if err != nil {
		return err
	}
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return fmt.Errorf("%s: not running", name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, name, cmd.Process.Pid, err)
	}
	return nil
}
