//go:build !linux

package lab

import (
	"context"
)

// Demo needs Linux.
func Demo(context.Context, DemoOptions) error { return ErrUnsupported }

// Up needs Linux.
func Up(context.Context, DemoOptions) error { return ErrUnsupported }

// CleanupStale needs Linux.
func CleanupStale(context.Context) ([]string, error) { return nil, ErrUnsupported }
