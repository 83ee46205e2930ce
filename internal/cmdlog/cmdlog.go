// Package cmdlog sets up the logger of a Postern program (posternd, the
// relay, the connector): text lines on one writer, at debug level when the
// program was started with -v.
package cmdlog

import (
	"io"
	"log/slog"
)

// New returns a text logger writing to w, at debug level when verbose is
// set (the programs' -v flag) and at info level otherwise.
func New(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
