//go:build !linux

package lab

import (
	"context"
	"io"
	"log/slog"
	"time"
)

// Options configure a lab (Linux only).
type Options struct {
	BinDir              string
	Dir                 string
	ReachableConnectors bool
	Postern             bool
	Network             *NetworkSpec
	Progress            io.Writer
	Logger              *slog.Logger
	TokenTTL            time.Duration
	Underlay6           bool
	IPv6OnlyClient      bool
}

// DemoOptions configure `postern-lab demo` and `postern-lab up`.
type DemoOptions struct {
	Options
	NonInteractive bool
	TopologyOnly   bool
	Out            io.Writer
}

// Demo needs Linux.
func Demo(context.Context, DemoOptions) error { return ErrUnsupported }

// Up needs Linux.
func Up(context.Context, DemoOptions) error { return ErrUnsupported }

// CleanupStale needs Linux.
func CleanupStale(context.Context) ([]string, error) { return nil, ErrUnsupported }
