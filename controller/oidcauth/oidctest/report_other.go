//go:build !unix

package oidctest

import "os"

// reportSignal is nil where node takes no report signal (Windows).
var reportSignal os.Signal
