package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"
)

// HTTPConfig configures the lab's private web server (`postern-lab http-server`).
//
//	GET  /              a short page naming the server
//	GET  /blob?size=N&seed=S   N deterministic bytes (see NewBlob), at most 4 GiB
//	POST /sha256        the hex SHA-256 of the request body
type HTTPConfig struct {
	Listen string
	Name   string // shown on the page, e.g. "web.corp.internal"
	Logger *slog.Logger
}

// MaxBlobSize bounds /blob.
const MaxBlobSize = 4 << 30

// NewBlob returns a reader of size deterministic pseudo-random bytes derived
// from seed; the e2e tests use it to know the SHA-256 of a transfer.
func NewBlob(seed uint64, size int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(rand.NewChaCha8(key), size)
}

// BlobSHA256 is the hex SHA-256 of NewBlob(seed, size).
func BlobSHA256(seed uint64, size int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, NewBlob(seed, size))
	return hex.EncodeToString(h.Sum(nil))
}

// HTTPHandler is the lab web server's handler.
func HTTPHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "Hello from %s, a private web server of the Postern lab.\nYou reached it as %s from %s.\n", name, r.Host, r.RemoteAddr)
	})
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if err != nil || size < 0 || size > MaxBlobSize {
			http.Error(w, "size: want 0.."+strconv.Itoa(MaxBlobSize), http.StatusBadRequest)
			return
		}
		seed, err := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		if err != nil {
			http.Error(w, "seed: want an unsigned integer", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.Copy(w, NewBlob(seed, size))
	})
	mux.HandleFunc("POST /sha256", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %d\n", hex.EncodeToString(h.Sum(nil)), n)
	})
	return mux
}

// ServeHTTP runs the web server until ctx ends.
func ServeHTTP(ctx context.Context, cfg HTTPConfig) error {
	if cfg.Listen == "" {
		return errors.New("http server: --listen is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Listen
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("http server: listen %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: HTTPHandler(cfg.Name), ReadHeaderTimeout: 10 * time.Second}
	log.Info("http server listening", "addr", cfg.Listen, "name", cfg.Name)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	}
}
