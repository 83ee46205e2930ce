package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// codeSession is a person whose TOTP code is "123456".
type codeSession struct {
	mfaSession
	enrolled bool
	calls    int
}

func (c *codeSession) VerifyMFA(ctx context.Context, code string) (controlapi.MFAStatus, error) {
	c.calls++
	if code != "123456" {
		return controlapi.MFAStatus{}, ErrMFACode
	}
	return controlapi.MFAStatus{Enrolled: c.enrolled, TOTP: c.enrolled}, nil
}

func (c *codeSession) RemoveMFA(ctx context.Context, code string) error {
	c.calls++
	if code != "123456" {
		return ErrMFACode
	}
	c.enrolled = false
	return nil
}

func TestMFAVerifyAndRemove(t *testing.T) {
	sess := &codeSession{mfaSession: mfaSession{person: true}, enrolled: true}
	core := &sessionCore{sess: sess}
	for _, path := range []string{controlapi.PathMFAVerify, controlapi.PathMFA + "/remove"} {
		sess.calls = 0
		if w := serve(t, core, "POST", path, `{"code":123456}`); w.Code != 400 || sess.calls != 0 {
			t.Errorf("%s bad body: %d %q, calls %d", path, w.Code, w.Body, sess.calls)
		}
		if w := serve(t, core, "POST", path, `{"code":"000000"}`); w.Code != 403 || apiError(t, w) != ErrMFACode.Error() || !sess.enrolled {
			t.Errorf("%s wrong code: %d %q", path, w.Code, w.Body)
		}
	}
	if w := serve(t, core, "POST", controlapi.PathMFAVerify, `{"code":"123456"}`); w.Code != 200 || w.Body.String() == "" {
		t.Errorf("verify: %d %q", w.Code, w.Body)
	}
	if w := serve(t, core, "POST", controlapi.PathMFA+"/remove", `{"code":"123456"}`); w.Code != 204 || w.Body.Len() != 0 || sess.enrolled {
		t.Errorf("remove: %d %q", w.Code, w.Body)
	}
}

// adminsCore is an in-memory list of admins by name.
type adminsCore struct {
	fakeCore
	admins map[string]string // name -> role
}

func (a *adminsCore) ListAdmins(ctx context.Context) ([]AdminView, error) { return nil, nil }

func (a *adminsCore) AddAdmin(ctx context.Context, name, role, password string) (*AdminView, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: name: required", ErrAdminInput)
	}
	if _, ok := a.admins[name]; ok {
		return nil, fmt.Errorf("admin %q: %w", name, store.ErrConflict)
	}
	a.admins[name] = role
	return &AdminView{ID: "adm_" + name, Name: name, Role: role}, nil
}

func (a *adminsCore) RemoveAdmin(ctx context.Context, key string) error {
	if _, ok := a.admins[key]; !ok {
		return fmt.Errorf("admin %q: %w", key, store.ErrNotFound)
	}
	delete(a.admins, key)
	return nil
}

func (a *adminsCore) RevokeAdminCredential(ctx context.Context, kind, id string) error {
	return fmt.Errorf("%s %q: %w", kind, id, store.ErrNotFound)
}

func TestAdminIdentityRoutes(t *testing.T) {
	core := &adminsCore{admins: map[string]string{"root": "owner"}}
	for _, tc := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"POST", PathAdmins, `{"name":"ann","role":"viewer","extra":1}`, 400, `request body: json: unknown field "extra"`},
		{"POST", PathAdmins, `{"role":"viewer"}`, 400, "invalid admin request: name: required"},
		{"POST", PathAdmins, `{"name":"root"}`, 409, `admin "root": already exists`},
		{"DELETE", PathAdmins + "/bob", "", 404, `admin "bob": not found`},
		{"DELETE", PathAdminTokens + "/tok_1", "", 404, `admin_token "tok_1": not found`},
		{"DELETE", PathAdminSessions + "/ses_1", "", 404, `admin_session "ses_1": not found`},
	} {
		w := serve(t, core, tc.method, tc.path, tc.body)
		if w.Code != tc.status || apiError(t, w) != tc.msg {
			t.Errorf("%s %s %s: %d %q, want %d %q", tc.method, tc.path, tc.body, w.Code, w.Body, tc.status, tc.msg)
		}
	}
	if len(core.admins) != 1 {
		t.Fatalf("bad input changed the admins: %v", core.admins)
	}
	if w := serve(t, core, "GET", PathAdmins, ""); w.Code != 200 || w.Body.String() != "{\n  \"items\": []\n}\n" {
		t.Errorf("list: %d %q", w.Code, w.Body)
	}
	if w := serve(t, core, "POST", PathAdmins, `{"name":"ann","role":"viewer"}`); w.Code != http.StatusCreated || core.admins["ann"] != "viewer" {
		t.Errorf("add: %d %q", w.Code, w.Body)
	}
	if w := serve(t, core, "DELETE", PathAdmins+"/ann", ""); w.Code != http.StatusNoContent || len(core.admins) != 1 {
		t.Errorf("remove: %d %q", w.Code, w.Body)
	}
}
