package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/console"
	"postern.dev/postern/controller/store"
)

// The controller's side of the web console (controller/console): its
// sign-in sessions, the model it shows beyond the admin API, and the
// checks of its forms (console.Core). Single sign-on for admins is in
// console_sso.go.

// consoleServer is the console over c, calling the admin API on mux.
func (c *Controller) consoleServer(mux http.Handler) *console.Server {
	return console.New(console.Config{Core: c, AdminAPI: mux, PublicURL: c.issuer, Roles: Roles,
		SessionTTL: adminSessionTTL, Now: c.now, Log: c.log})
}

// ConsoleSession resolves a console cookie's secret to a live session and
// its admin's current role (console.Sessions).
func (c *Controller) ConsoleSession(r *http.Request, secret string) (context.Context, *console.Admin, error) {
	var s *AdminSession
	var adm *Admin
	err := c.store.View(r.Context(), func(tx store.Tx) error {
		o, err := tx.GetByName(KindAdminSession, sha256Hex(secret))
		if err != nil {
			return err
		}
		if s, err = decodeObj[AdminSession](o); err != nil {
			return err
		}
		ao, err := tx.Get(KindAdmin, s.AdminID)
		if err != nil {
			return err
		}
		adm, err = decodeObj[Admin](ao)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, errAdminAuth
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read console session: %w", err)
	}
	now := c.now()
	if !sessionLive(s, now) {
		return nil, nil, errAdminAuth
	}
	if now.Sub(s.LastSeen) >= adminTouchEvery {
		c.touchAdminRecord(r.Context(), KindAdminSession, s.ID, now)
	}
	via := "session " + s.ID
	if s.Method == "oidc" {
		via = fmt.Sprintf("oidc %s (session %s)", s.Subject, s.ID)
	}
	p := &adminPrincipal{Name: adm.Name, AdminID: adm.ID, Role: adm.Role, Via: via, Agent: truncate(r.UserAgent(), 200),
		caps: roleCaps[adm.Role], SessionID: s.ID}
	return withAdmin(r.Context(), p), consoleAdmin(p), nil
}

// consoleAdmin is p as the console shows it.
func consoleAdmin(p *adminPrincipal) *console.Admin {
	return &console.Admin{Name: p.Name, Role: p.Role, SessionID: p.SessionID,
		Read: p.can(capRead), Write: p.can(capWrite), Approve: p.can(capApprove), Admins: p.can(capAdmins)}
}

// ConsoleSignIn checks an admin's password and starts a console session;
// it returns the cookie secret (console.Sessions).
func (c *Controller) ConsoleSignIn(ctx context.Context, r *http.Request, name, password string) (string, error) {
	name = strings.TrimSpace(name)
	at := loginAttempt{Account: "admin:" + name, IP: api.ClientIP(r)}
	if v := c.logins.check(ctx, at); v.wait > 0 {
		return "", fmt.Errorf("%w: try again in %s", ErrThrottled, v.wait.Round(1e9))
	}
	var adm *Admin
	err := c.store.View(ctx, func(tx store.Tx) error {
		o, err := tx.GetByName(KindAdmin, name)
		if err != nil {
			return err
		}
		adm, err = decodeObj[Admin](o)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("read admin %q: %w", name, err)
	}
	hash := dummyHash()
	if adm != nil && adm.PasswordHash != "" {
		hash = adm.PasswordHash
	}
	if !verifyPassword(hash, password) || adm == nil || adm.PasswordHash == "" {
		c.logins.fail(ctx, at)
		p := &adminPrincipal{Name: name, Via: "password", Agent: truncate(r.UserAgent(), 200)}
		c.commit(withAdmin(ctx, p), func(tx store.Tx) error {
			return tx.Audit(store.AuditEntry{Actor: name, Action: "sign-in-failed", Kind: KindAdmin, Name: name})
		})
		return "", fmt.Errorf("%w: wrong name or password", ErrUnauthenticated)
	}
	c.logins.success(ctx, at)
	return c.startConsoleSession(ctx, r, adm, "password", "")
}

// startConsoleSession stores a new session for adm and returns its secret.
func (c *Controller) startConsoleSession(ctx context.Context, r *http.Request, adm *Admin, method, subject string) (string, error) {
	secret := api.RandomHex(32)
	now := c.now().UTC()
	s := AdminSession{ID: newID("ases"), AdminID: adm.ID, Method: method, Subject: subject, TokenHash: sha256Hex(secret),
		Created: now, ExpiresAt: now.Add(adminSessionTTL), LastSeen: now, IP: api.ClientIP(r), UserAgent: truncate(r.UserAgent(), 200)}
	p := &adminPrincipal{Name: adm.Name, AdminID: adm.ID, Role: adm.Role, Via: method + " (session " + s.ID + ")", Agent: s.UserAgent}
	_, _, err := c.commit(withAdmin(ctx, p), func(tx store.Tx) error {
		o, err := toObject(KindAdminSession, s.ID, s.TokenHash, &s)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: adm.Name, Action: "sign-in", Kind: KindAdminSession, ObjectID: s.ID, Name: adm.Name})
	})
	if err != nil {
		return "", fmt.Errorf("start console session: %w", err)
	}
	return secret, nil
}

// KindAppliedFile records what the last `apply` declared, so that the
// console can say which objects a file manages (the next apply of that
// file overwrites console edits to them).
const KindAppliedFile = "applied_file"

// AppliedFile is the record of the last apply.
type AppliedFile struct {
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Objects []string  `json:"objects"` // "kind/name"
}

// noteAppliedFile records the objects a successfully applied file declares.
// A failure is logged: the apply itself succeeded.
func (c *Controller) noteAppliedFile(ctx context.Context, data []byte) {
	spec, _, err := ParseSpec(data)
	if err != nil {
		return
	}
	var objs []string
	add := func(kind, name string) { objs = append(objs, kind+"/"+name) }
	for _, n := range spec.RemoteNetworks {
		add(KindNetwork, n.Name)
	}
	for _, g := range spec.Groups {
		add(KindGroup, g.Name)
	}
	for _, r := range spec.Resources {
		add(KindResource, r.Name)
	}
	for _, u := range spec.Users {
		add(KindUser, strings.ToLower(u.Email))
	}
	for _, a := range spec.ServiceAccounts {
		add(KindServiceAccount, a.Name)
	}
	for _, p := range spec.PostureProfiles {
		add(KindPostureProfile, p.Name)
	}
	rec := AppliedFile{At: c.now().UTC(), Actor: adminName(ctx), Objects: objs}
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		o, err := toObject(KindAppliedFile, KindAppliedFile, "last", &rec)
		if err != nil {
			return err
		}
		return tx.Put(o)
	})
	if err != nil {
		c.log.Warn("record applied file", "err", err)
	}
}

// AppliedFile returns the last apply's record, nil when there is none or
// it cannot be read (console.Model).
func (c *Controller) AppliedFile(ctx context.Context) *console.AppliedFile {
	var rec *AppliedFile
	c.store.View(ctx, func(tx store.Tx) error {
		o, err := tx.Get(KindAppliedFile, KindAppliedFile)
		if err == nil {
			rec, err = decodeObj[AppliedFile](o)
		}
		return err
	})
	if rec == nil {
		return nil
	}
	return &console.AppliedFile{At: rec.At, Actor: rec.Actor, Objects: rec.Objects}
}

// DevicePosture is a device's latest posture report and the profiles it
// satisfies or fails (console.Model).
func (c *Controller) DevicePosture(deviceID string) console.DevicePosture {
	m := c.model()
	var dp console.DevicePosture
	if rec := m.access.posture[deviceID]; rec != nil {
		report := rec.Report
		dp.Report, dp.Reported = &report, rec.Reported
	}
	dp.Satisfied, dp.Failed = m.devicePosture(deviceID)
	return dp
}

// CheckSpec validates a configuration in the JSON of /api/v1/spec as
// apply does (console.Model).
func (c *Controller) CheckSpec(data []byte) error {
	var spec Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("decode configuration: %w", err)
	}
	return normalizeSpec(&spec, nil)
}

// PlanText renders the JSON of an apply's plan for people (console.Model).
func (c *Controller) PlanText(data []byte) (string, error) {
	var p Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return "", fmt.Errorf("decode plan: %w", err)
	}
	return p.String(), nil
}

// HashPassword hashes pw as passwords are stored (console.Model).
func (c *Controller) HashPassword(pw string) (string, error) { return hashPassword(pw) }

// IsPasswordHash reports whether h is a hash a user may be given
// (console.Model).
func (c *Controller) IsPasswordHash(h string) bool { return isPasswordHash(h) }
