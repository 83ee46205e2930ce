package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"postern.dev/postern/controlapi"
)

// keySession is an in-memory person with security keys.
type keySession struct {
	mfaSession
	keys    int
	stepUp  bool
	removed int
}

func (k *keySession) BeginWebAuthn(ctx context.Context, register bool) (controlapi.WebAuthnCeremony, int, error) {
	if !register && k.keys == 0 {
		return controlapi.WebAuthnCeremony{}, http.StatusNotFound, ErrNoSecurityKey
	}
	return controlapi.WebAuthnCeremony{ID: "wac_1", URL: "https://ctl/page#wan_x"}, http.StatusOK, nil
}

func (k *keySession) WebAuthnCeremony(ctx context.Context, id string) (controlapi.WebAuthnCeremony, error) {
	if id != "wac_1" {
		return controlapi.WebAuthnCeremony{}, ErrNoCeremony
	}
	return controlapi.WebAuthnCeremony{ID: id, State: controlapi.WebAuthnPending}, nil
}

func (k *keySession) RemoveSecurityKeys(ctx context.Context) error {
	switch {
	case k.keys == 0:
		return ErrNoSecurityKey
	case !k.stepUp:
		return &Forbidden{Msg: "removing security keys needs a step-up"}
	}
	k.removed, k.keys = k.keys, 0
	return nil
}

type keyCore struct {
	sessionCore
	finished int
}

func (c *keyCore) WebAuthnOptions(ctx context.Context, secret string) (controlapi.WebAuthnOptions, int, error) {
	if secret != "wan_x" {
		return controlapi.WebAuthnOptions{}, http.StatusNotFound, errors.New("unknown or finished WebAuthn ceremony")
	}
	return controlapi.WebAuthnOptions{User: "ann@example.com"}, http.StatusOK, nil
}

func (c *keyCore) FinishWebAuthn(ctx context.Context, req controlapi.WebAuthnFinish) (controlapi.WebAuthnCeremony, int, error) {
	if len(req.Credential) == 0 {
		return controlapi.WebAuthnCeremony{}, http.StatusBadRequest, errors.New("credential: required")
	}
	c.finished++
	return controlapi.WebAuthnCeremony{ID: "wac_1", State: controlapi.WebAuthnDone}, http.StatusOK, nil
}

func TestWebAuthnEndpoints(t *testing.T) {
	sess := &keySession{mfaSession: mfaSession{person: true}, keys: 1}
	core := &keyCore{sessionCore: sessionCore{sess: sess}}
	ks := core
	for _, tc := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"POST", controlapi.PathMFAWebAuthn, `{"register":1}`, 400, "request body: json: cannot unmarshal number into Go struct field WebAuthnBegin.register of type bool"},
		{"GET", controlapi.PathMFAWebAuthn + "/wac_9", "", 404, `no WebAuthn ceremony "wac_9" of this session`},
		{"POST", controlapi.PathMFAWebAuthn + "/remove", `{"all":true}`, 400, `request body: json: unknown field "all"`},
		{"POST", controlapi.PathMFAWebAuthn + "/remove", `{}`, 403, "removing security keys needs a step-up"},
		{"POST", controlapi.PathWebAuthnOptions, `{"secret":"wan_nope"}`, 404, "unknown or finished WebAuthn ceremony"},
		{"POST", controlapi.PathWebAuthnFinish, `{"secret":"wan_x"}`, 400, "credential: required"},
		{"POST", controlapi.PathWebAuthnFinish, `{"secret":"wan_x","extra":1}`, 400, `request body: json: unknown field "extra"`},
	} {
		w := serve(t, ks, tc.method, tc.path, tc.body)
		if w.Code != tc.status || apiError(t, w) != tc.msg {
			t.Errorf("%s %s %s: %d %q, want %d %q", tc.method, tc.path, tc.body, w.Code, w.Body, tc.status, tc.msg)
		}
	}
	if sess.keys != 1 || core.finished != 0 {
		t.Fatalf("bad input changed the keys (%d) or finished a ceremony (%d)", sess.keys, core.finished)
	}

	// A service account has no second factor.
	svc := &keyCore{sessionCore: sessionCore{sess: &keySession{}}}
	if w := serve(t, svc, "POST", controlapi.PathMFAWebAuthn, `{}`); w.Code != 403 || apiError(t, w) != "a second factor is for people; service accounts have none" {
		t.Errorf("service account: %d %q", w.Code, w.Body)
	}

	if w := serve(t, ks, "POST", controlapi.PathMFAWebAuthn, `{}`); w.Code != 200 || !strings.Contains(w.Body.String(), `"url": "https://ctl/page#wan_x"`) {
		t.Errorf("begin: %d %q", w.Code, w.Body)
	}
	if w := serve(t, ks, "GET", controlapi.PathMFAWebAuthn+"/wac_1", ""); w.Code != 200 {
		t.Errorf("status: %d %q", w.Code, w.Body)
	}
	sess.stepUp = true
	if w := serve(t, ks, "POST", controlapi.PathMFAWebAuthn+"/remove", `{}`); w.Code != 204 || sess.removed != 1 {
		t.Errorf("remove: %d %q", w.Code, w.Body)
	}
	if w := serve(t, ks, "POST", controlapi.PathMFAWebAuthn+"/remove", `{}`); w.Code != 404 || apiError(t, w) != ErrNoSecurityKey.Error() {
		t.Errorf("remove again: %d %q", w.Code, w.Body)
	}
	if w := serve(t, ks, "POST", controlapi.PathMFAWebAuthn, `{}`); w.Code != 404 || apiError(t, w) != ErrNoSecurityKey.Error() {
		t.Errorf("step-up without keys: %d %q", w.Code, w.Body)
	}
	if w := serve(t, ks, "POST", controlapi.PathWebAuthnFinish, `{"secret":"wan_x","credential":{}}`); w.Code != 200 || core.finished != 1 {
		t.Errorf("finish: %d %q", w.Code, w.Body)
	}
	w := serve(t, ks, "GET", controlapi.PathWebAuthnPage, "")
	if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Security-Policy"), "script-src 'self'") || w.Header().Get("X-Frame-Options") != "DENY" {
		t.Errorf("page: %d %v", w.Code, w.Header())
	}
}
