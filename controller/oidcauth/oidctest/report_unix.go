//go:build unix

package oidctest

import (
	"os"
	"syscall"
)

// reportSignal makes node write a diagnostic report (--report-signal).
var reportSignal os.Signal = syscall.SIGUSR2
