//go:build !windows

package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

// serveDaemon answers the local API on a Unix socket with h until the test
// ends and returns the socket's path.
func serveDaemon(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestClientDecodesDaemonErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(Status{State: StateConnected})
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(Error{Error: "not yours"})
	})
	c := NewClient(serveDaemon(t, mux))
	ctx := context.Background()
	if st, err := c.Status(ctx); err != nil || st.State != StateConnected {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	err := c.Events(ctx, func(Status) bool { return false })
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || ae.Err.Error != "not yours" {
		t.Fatalf("Events on a 403: %v", err)
	}
	if _, err := c.Resources(ctx); err == nil {
		t.Fatal("a 404 (no such route) was taken for an answer")
	}
}

func TestClientNamesAMissingDaemon(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), SocketName))
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrDaemonNotRunning) {
		t.Fatalf("no daemon: %v, want ErrDaemonNotRunning", err)
	}
}
