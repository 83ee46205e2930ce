//go:build !linux

package client

import "log/slog"

// watchNetwork has no implementation on this platform yet: redials follow
// their backoff alone (at most reconnectMax apart).
func watchNetwork(*slog.Logger, func()) (netWatcher, error) { return nopWatcher{}, nil }
