package tray_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/localapi"
)

// fakeDaemon serves the local API on a Unix socket with a scripted state: a
// test stand-in for posternd (the real daemon is covered by the lab tests).
type fakeDaemon struct {
	socket string
	srv    *http.Server
	ln     net.Listener

	mu        sync.Mutex
	status    localapi.Status
	resources []localapi.Resource
	calls     []string
	subs      map[chan localapi.Status]struct{}
	called    chan string
	// sso, when set, serves /v1/sso/start and OIDC logins the way posternd
	// does through the controller (which holds oidcauth).
	sso *oidcauth.Provider
}

func signedIn(state string) localapi.Status {
	return localapi.Status{
		State: state, Version: "test", ControllerURL: "https://controller.example",
		Principal: &localapi.Principal{ID: "u1", Kind: "user", Name: "alice@example.com", Groups: []string{"engineering"}},
		Network:   "corp", ControllerReachable: true,
	}
}

var testResources = []localapi.Resource{
	{ID: "r1", Name: "db", Address: "db.corp.internal", Network: "corp", Ports: []string{"tcp/5432"}},
	{ID: "r2", Name: "wiki", Address: "wiki.corp.internal", Network: "corp", Ports: []string{"tcp/443"}},
}

func newFakeDaemon(t *testing.T, dir string) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{
		socket:    filepath.Join(dir, localapi.SocketName),
		status:    signedIn(localapi.StateConnected),
		resources: testResources,
		subs:      map[chan localapi.Status]struct{}{},
		called:    make(chan string, 16),
	}
	d.start(t)
	return d
}

func (d *fakeDaemon) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatalf("listen %s: %v", d.socket, err)
	}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		reply(w, d.status)
	})
	mux.HandleFunc("GET /v1/resources", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		defer d.mu.Unlock()
		reply(w, d.resources)
	})
	transition := func(path, state string, signOut bool) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			d.mu.Lock()
			d.calls = append(d.calls, path)
			if signOut {
				d.status = localapi.Status{State: state, Version: "test", ControllerURL: d.status.ControllerURL}
			} else {
				d.status.State = state
			}
			st := d.status
			d.mu.Unlock()
			d.called <- path
			d.publish(st)
			reply(w, st)
		})
	}
	transition("/v1/down", localapi.StateStopped, false)
	transition("/v1/up", localapi.StateConnected, false)
	transition("/v1/logout", localapi.StateSignedOut, true)
	mux.HandleFunc("POST "+localapi.PathSSOStart, func(w http.ResponseWriter, r *http.Request) {
		var req localapi.SSOStartRequest
		if d.sso == nil || json.NewDecoder(r.Body).Decode(&req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			reply(w, localapi.Error{Error: "no single sign-on"})
			return
		}
		st, err := d.sso.Start(req.OIDCStartRequest)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			reply(w, localapi.Error{Error: err.Error()})
			return
		}
		reply(w, st)
	})
	mux.HandleFunc("POST /v1/login", func(w http.ResponseWriter, r *http.Request) {
		var req localapi.LoginRequest
		if d.sso == nil || json.NewDecoder(r.Body).Decode(&req) != nil || req.OIDC == nil {
			w.WriteHeader(http.StatusBadRequest)
			reply(w, localapi.Error{Error: "only OIDC logins here"})
			return
		}
		g, err := d.sso.Exchange(r.Context(), *req.OIDC)
		if err != nil {
			w.WriteHeader(http.StatusForbidden)
			reply(w, localapi.Error{Error: err.Error(), Hint: "sign in again"})
			return
		}
		st := localapi.Status{State: localapi.StateStopped, Version: "test", ControllerURL: req.ControllerURL,
			Principal: &localapi.Principal{ID: g.Identity.Subject, Kind: "user", Name: g.Identity.Email, Groups: g.Identity.Groups}}
		d.mu.Lock()
		d.status = st
		d.calls = append(d.calls, "/v1/login")
		d.mu.Unlock()
		d.publish(st)
		reply(w, st)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		ch := make(chan localapi.Status, 16)
		d.mu.Lock()
		d.subs[ch] = struct{}{}
		first := d.status
		d.mu.Unlock()
		defer func() {
			d.mu.Lock()
			delete(d.subs, ch)
			d.mu.Unlock()
		}()
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		_ = enc.Encode(first)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case st := <-ch:
				if enc.Encode(st) != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	})
	d.ln = ln
	d.srv = &http.Server{Handler: mux}
	go func() { _ = d.srv.Serve(ln) }()
	t.Cleanup(d.stop)
}

// stop closes the socket like a daemon that exits.
func (d *fakeDaemon) stop() {
	_ = d.srv.Close()
	_ = os.Remove(d.socket)
}

// set changes the state and streams it.
func (d *fakeDaemon) set(st localapi.Status, res []localapi.Resource) {
	d.mu.Lock()
	d.status, d.resources = st, res
	d.mu.Unlock()
	d.publish(st)
}

func (d *fakeDaemon) publish(st localapi.Status) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch := range d.subs {
		select {
		case ch <- st:
		default:
		}
	}
}
