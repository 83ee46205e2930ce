package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"time"

	"postern.dev/postern/localapi"
)

// LocalAPIServer serves the localapi contract on the daemon's socket.
type LocalAPIServer struct {
	d    *Daemon
	srv  *http.Server
	ln   net.Listener
	path string
}

// ListenLocalAPI creates the socket at path (removing a stale one), with mode
// 0660 and, when gid >= 0, that group. Only the owner, root and (with a
// group) members of that primary group are admitted.
func ListenLocalAPI(d *Daemon, path string, gid int) (*LocalAPIServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	ln, err := listenSocket(path, gid)
	if err != nil {
		return nil, err
	}
	s := &LocalAPIServer{d: d, ln: ln, path: path}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/login", withBody(s, d.Login))
	mux.HandleFunc("POST /v1/logout", answer(s, d.Logout))
	mux.HandleFunc("POST /v1/up", answer(s, d.Up))
	mux.HandleFunc("POST /v1/down", answer(s, d.Down))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, d.Status()) })
	mux.HandleFunc("GET /v1/resources", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, d.Resources()) })
	mux.HandleFunc("GET /v1/dns", s.dns)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("GET "+localapi.PathNetcheck, s.netcheck)
	s.accessRoutes(mux)
	mux.HandleFunc("POST "+localapi.PathSSOStart, withBody(s, d.SSOStart))
	mux.HandleFunc("POST "+localapi.PathSSODevice, withBody(s, d.SSODevice))
	// Profiles for diagnosing the daemon (same access rules as the rest).
	mux.Handle("GET /v1/debug/pprof/", http.StripPrefix("/v1", http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /v1/debug/pprof/profile", http.StripPrefix("/v1", http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /v1/debug/pprof/trace", http.StripPrefix("/v1", http.HandlerFunc(pprof.Trace)))
	s.srv = &http.Server{
		Handler:           hostCheck(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       peerContext,
	}
	return s, nil
}

// Serve serves until Close.
func (s *LocalAPIServer) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server and removes the socket.
func (s *LocalAPIServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	_ = os.Remove(s.path)
	return nil
}

// hostCheck refuses requests that did not come through the socket's
// peer-credential check and any Host other than the pseudo-host (no
// browser can reach a Unix socket, but keep the DNS-rebinding class shut).
func hostCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err, _ := r.Context().Value(peerErrKey{}).(error); err != nil {
			writeError(w, http.StatusForbidden, err.Error(), "run postern as root or as the user that started posternd")
			return
		}
		h := r.Host
		if i := strings.IndexByte(h, ':'); i >= 0 {
			h = h[:i]
		}
		if h != "" && h != "posternd" && h != "local" && h != "localhost" {
			writeError(w, http.StatusForbidden, "unexpected Host "+r.Host, "")
			return
		}
		if r.Header.Get("Origin") != "" {
			writeError(w, http.StatusForbidden, "browser requests are not allowed", "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type peerErrKey struct{}

func peerContext(ctx context.Context, c net.Conn) context.Context {
	if err := checkPeer(c); err != nil {
		return context.WithValue(ctx, peerErrKey{}, err)
	}
	return ctx
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg, hint string) {
	writeJSON(w, code, localapi.Error{Error: msg, Hint: hint})
}

// errorResponse maps a daemon error to an HTTP status and a hint.
func (s *LocalAPIServer) errorResponse(w http.ResponseWriter, err error) {
	url := ""
	if st := s.d.Status(); st.ControllerURL != "" {
		url = st.ControllerURL
	}
	switch {
	case errors.Is(err, ErrBadRequest):
		writeError(w, http.StatusBadRequest, err.Error(), "")
	case errors.Is(err, ErrNotSignedIn):
		writeError(w, http.StatusConflict, err.Error(), "sign in first: postern login --controller URL ...")
	case errors.Is(err, ErrUnauthorized):
		writeError(w, http.StatusUnauthorized, err.Error(), "check the email and password (or the service key); ask your admin if the account exists")
	case errors.Is(err, ErrForbidden):
		writeError(w, http.StatusForbidden, err.Error(), "")
	case errors.Is(err, ErrCertificate):
		writeError(w, http.StatusBadGateway, err.Error(), "the controller's certificate is not signed by the CA you gave: pass the deployment CA with --ca FILE (the controller's DATA/ca.pem)")
	case errors.Is(err, ErrControllerUnreachable):
		hint := "check the URL and your network; is the controller running?"
		if url != "" {
			hint = "cannot reach the controller at " + url + ": " + hint
		}
		writeError(w, http.StatusBadGateway, err.Error(), hint)
	case errors.Is(err, ErrControllerRefused):
		writeError(w, http.StatusBadGateway, err.Error(), "")
	default:
		writeError(w, http.StatusInternalServerError, err.Error(), "see the posternd log")
	}
}

// answer serves fn's result as JSON (200 OK), or its error.
func answer[Out any](s *LocalAPIServer, fn func(context.Context) (Out, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		out, err := fn(r.Context())
		if err != nil {
			s.errorResponse(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// withBody serves fn with the request's JSON body (unknown fields refused)
// as its input, answering its result as JSON (200 OK), or its error.
func withBody[In, Out any](s *LocalAPIServer, fn func(context.Context, In) (Out, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		if !decodeBody(w, r, &in) {
			return
		}
		out, err := fn(r.Context(), in)
		if err != nil {
			s.errorResponse(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error(), "")
		return false
	}
	return true
}

func (s *LocalAPIServer) dns(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.URL.Query().Get("name"))
	if name == "" || len(name) > 253 {
		writeError(w, http.StatusBadRequest, "name is required (at most 253 characters)", "postern dns NAME")
		return
	}
	ex, err := s.d.ExplainDNS(r.Context(), name)
	if err != nil {
		s.errorResponse(w, err)
		return
	}
	s.d.describeAddressing(&ex)
	writeJSON(w, http.StatusOK, ex)
}

// events streams a Status line now and on every change.
func (s *LocalAPIServer) events(w http.ResponseWriter, r *http.Request) {
	ch, cancel := s.d.Events()
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var last []byte
	send := func() bool {
		b, err := json.Marshal(s.d.Status())
		if err != nil {
			return false
		}
		if bytes.Equal(b, last) {
			return true
		}
		last = b
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return true
	}
	if !send() {
		return
	}
	keep := time.NewTicker(30 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case _, ok := <-ch:
			if !ok || !send() {
				return
			}
		case <-keep.C:
			// A status line doubles as keepalive for the reader.
			last = nil
			if !send() {
				return
			}
		}
	}
}
