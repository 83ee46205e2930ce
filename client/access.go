package client

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
	"postern.dev/postern/version"
	"postern.dev/postern/wire"
)

// Access governance on the device (docs/access.md): the daemon forwards the
// CLI's second-factor and access-request calls to the controller with its
// session, and reports the device's posture at sign-in and every
// postureInterval.

// postureInterval is how often the daemon reports posture.
const postureInterval = 3 * time.Minute

// controller returns the signed-in control client.
func (d *Daemon) controller() (*controlClient, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctl == nil || d.sess == nil {
		return nil, ErrNotSignedIn
	}
	return d.ctl, nil
}

// accessCall forwards one call to the controller.
func (d *Daemon) accessCall(ctx context.Context, method, path string, in, out any) error {
	cc, err := d.controller()
	if err != nil {
		return err
	}
	return cc.do(ctx, method, path, in, out, 20*time.Second)
}

// collectPosture gathers this device's facts (posture_<os>.go).
func collectPosture(ctx context.Context) controlapi.PostureReport {
	r := probePosture(ctx)
	r.OS = runtime.GOOS
	r.ClientVersion = version.Version
	return r
}

// reportPosture sends the device's posture and returns the verdict.
func (d *Daemon) reportPosture(ctx context.Context, cc *controlClient) (localapi.Posture, error) {
	rep := collectPosture(ctx)
	rep.Reported = time.Now().UTC()
	d.mu.Lock()
	key, sess := d.key, d.sess
	d.mu.Unlock()
	if sess == nil {
		return localapi.Posture{}, ErrNotSignedIn
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return localapi.Posture{}, err
	}
	signed := controlapi.SignedPosture{Report: body,
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, controlapi.PostureSigningInput(body, sess.DeviceID)))}
	var v controlapi.PostureVerdict
	if err := cc.do(ctx, http.MethodPost, controlapi.PathPosture, signed, &v, 20*time.Second); err != nil {
		return localapi.Posture{}, fmt.Errorf("report posture: %w", err)
	}
	return localapi.Posture{Report: rep, Verdict: v}, nil
}

// postureLoop reports posture now and every postureInterval while the
// session runs.
func (d *Daemon) postureLoop(ctx context.Context, cc *controlClient) {
	defer d.sessWG.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p, err := d.reportPosture(ctx, cc); err != nil {
			if ctx.Err() == nil {
				d.log.Warn("posture report failed", "err", err)
			}
		} else if len(p.Verdict.Failed) > 0 {
			d.log.Info("device posture", "satisfied", p.Verdict.Satisfied, "failed", p.Verdict.Failed)
		}
		t.Reset(postureInterval)
	}
}

// accessRoutes adds the access endpoints of the local API.
func (s *LocalAPIServer) accessRoutes(mux *http.ServeMux) {
	d := s.d
	forward := func(method, path string, body func() any, status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var in any
			if body != nil {
				in = body()
				if !decodeBody(w, r, in) {
					return
				}
			}
			p := path
			if id := r.PathValue("id"); id != "" {
				p += "/" + url.PathEscape(id) + "/" + r.PathValue("verb")
			}
			var out any
			if status != http.StatusNoContent {
				out = new(any)
			}
			if err := d.accessCall(r.Context(), method, p, in, out); err != nil {
				s.errorResponse(w, err)
				return
			}
			if out == nil {
				w.WriteHeader(status)
				return
			}
			writeJSON(w, status, out)
		}
	}
	mux.HandleFunc("GET "+localapi.PathMFA, forward(http.MethodGet, controlapi.PathMFA, nil, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathMFAEnroll, forward(http.MethodPost, controlapi.PathMFAEnroll, func() any { return new(struct{}) }, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathMFAVerify, forward(http.MethodPost, controlapi.PathMFAVerify, func() any { return new(controlapi.MFAVerifyRequest) }, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathMFARemove, forward(http.MethodPost, controlapi.PathMFA+"/remove", func() any { return new(controlapi.MFAVerifyRequest) }, http.StatusNoContent))
	s.webauthnRoutes(mux)
	mux.HandleFunc("GET "+localapi.PathRequests, forward(http.MethodGet, controlapi.PathMyRequests, nil, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathRequests, forward(http.MethodPost, controlapi.PathMyRequests, func() any { return new(controlapi.AccessRequestCreate) }, http.StatusOK))
	mux.HandleFunc("POST "+localapi.PathRequests+"/{id}/{verb}", forward(http.MethodPost, controlapi.PathMyRequests, func() any { return new(controlapi.AccessDecision) }, http.StatusOK))
	mux.HandleFunc("GET "+localapi.PathPosture, func(w http.ResponseWriter, r *http.Request) {
		cc, err := d.controller()
		if err != nil {
			s.errorResponse(w, err)
			return
		}
		p, err := d.reportPosture(r.Context(), cc)
		if err != nil {
			s.errorResponse(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
}

// isAccessStatus reports whether a connector's refusal is about access
// requirements (second factor, posture, approval or auto-lock).
func isAccessStatus(s wire.Status) bool {
	return s == wire.StatusMFARequired || s == wire.StatusPosture || s == wire.StatusApprovalRequired
}
