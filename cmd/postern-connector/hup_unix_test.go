//go:build unix

package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPRotates: SIGHUP to the connector process triggers a rotation.
func TestSIGHUPRotates(t *testing.T) {
	// Catch SIGHUP here too, so that one sent before rotateOnHUP has
	// registered does not end the test binary.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rotated := make(chan struct{}, 16)
	go rotateOnHUP(ctx, func(context.Context) error { rotated <- struct{}{}; return nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-rotated:
			return
		case <-deadline:
			t.Fatal("no rotation after SIGHUP")
		case <-tick.C:
		}
	}
}
