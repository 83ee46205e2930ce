// Package console is the web console of the controller (docs/console.md):
// server-rendered admin pages (html/template) enhanced by htmx, vendored
// under static (no CDN), behind a strict Content-Security-Policy without
// inline script or style. Every page reads and every form writes through
// the admin API in-process, with the signed-in admin's identity: the API's
// role checks, validation and messages are the console's, and the console
// only hides what the API would refuse. What it needs beyond the API (its
// sign-in sessions and single sign-on, the model's posture and apply
// records, the checks of its forms) it asks of the controller through Core;
// it imports nothing of controller.
package console

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
)

// consoleFiles is the pages' templates and the static files.
//
//go:embed static templates
var consoleFiles embed.FS

// Config is what a console needs.
type Config struct {
	// Core is the controller.
	Core Core
	// AdminAPI serves the admin API (the controller's mux): every page
	// reads and every form writes through it, in-process.
	AdminAPI http.Handler
	// PublicURL is the controller's URL, without a trailing slash: the
	// single sign-on callback is PublicURL + OIDCCallbackPath.
	PublicURL string
	// Roles are the admin roles, most powerful first (the Admins page).
	Roles []string
	// SessionTTL is a console session's longest life (its cookie's).
	SessionTTL time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Server serves the console's pages.
type Server struct {
	core      Core
	adminAPI  http.Handler
	publicURL string
	roles     []string
	ttl       time.Duration
	now       func() time.Time
	log       *slog.Logger
}

// New returns the console of cfg.Core.
func New(cfg Config) *Server {
	s := &Server{core: cfg.Core, adminAPI: cfg.AdminAPI, publicURL: cfg.PublicURL, roles: cfg.Roles,
		ttl: cfg.SessionTTL, now: cfg.Now, log: cfg.Log}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// consoleCSP: everything from this origin only, no inline code, no eval, no
// plugins, no framing; forms post back here only.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var consoleTemplates = parseConsoleTemplates()

func parseConsoleTemplates() map[string]*template.Template {
	funcs := template.FuncMap{
		"can": func(p *Admin, what string) bool {
			switch what {
			case "write":
				return p.can(capWrite)
			case "approve":
				return p.can(capApprove)
			case "admins":
				return p.can(capAdmins)
			case "read":
				return p.can(capRead)
			}
			return false
		},
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"join":  strings.Join,
		"rate":  func(bps float64) string { return humanBytes(bps) + "/s" },
		"bytes": humanBytes,
		"pct":   func(f float64) string { return strconv.FormatFloat(f*100, 'f', 0, 64) + "%" },
	}
	pages, err := fs.Glob(consoleFiles, "templates/page_*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/page_"), ".html")
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(consoleFiles, "templates/layout.html", p, "templates/frag_*.html"))
	}
	// Fragments alone, for htmx answers that are not a whole page.
	out[fragments] = template.Must(template.New(fragments).Funcs(funcs).ParseFS(consoleFiles, "templates/frag_*.html"))
	return out
}

// pageData is what every console page renders.
type pageData struct {
	Title  string
	Nav    string
	Me     *Admin
	CSRF   string
	Flash  string
	Error  string
	Denied bool // the admin's role may not see this page's data
	Data   any
}

func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

func (c *Server) render(w http.ResponseWriter, status int, page string, d pageData) {
	t, ok := consoleTemplates[page]
	if !ok {
		api.WriteError(w, http.StatusInternalServerError, "console page %q missing", page)
		return
	}
	var b bytes.Buffer
	c.writeHTML(w, status, "page", page, t.Execute(&b, d), &b)
}

// renderForm renders a page with a form: msg (when set) is the form's
// error, the "done" query parameter the flash of the action just done.
func (c *Server) renderForm(w http.ResponseWriter, r *http.Request, status int, page string, d pageData, msg string, data any) {
	if msg != "" {
		d.Error = msg
	}
	d.Flash = r.URL.Query().Get("done")
	d.Data = data
	c.render(w, status, page, d)
}

// fragments names the template set of the page fragments (frag_*.html).
const fragments = "fragments"

// renderFragment answers an htmx request with one fragment (a template
// defined in frag_*.html).
func (c *Server) renderFragment(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	c.writeHTML(w, status, "fragment", name, consoleTemplates[fragments].ExecuteTemplate(&b, name, data), &b)
}

// writeHTML answers with the rendered console page or fragment b, or with
// a 500 when rendering it failed (err).
func (c *Server) writeHTML(w http.ResponseWriter, status int, what, name string, err error, b *bytes.Buffer) {
	if err != nil {
		c.log.Error("render console "+what, what, name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	consoleHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// consoleStatic serves the vendored htmx, the style sheet and the script.
func consoleStatic() http.Handler {
	sub, err := fs.Sub(consoleFiles, "static")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	files := http.StripPrefix("/console/static/", http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// apiResult is one in-process admin API call's answer.
type apiResult struct {
	Status int
	Body   []byte
}

// Err is the API's error message, "" on success.
func (a apiResult) Err() string {
	if a.Status < 400 {
		return ""
	}
	var e controlapi.Error
	if json.Unmarshal(a.Body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return fmt.Sprintf("HTTP %d", a.Status)
}

type recorder struct {
	h    http.Header
	code int
	b    bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// api calls the admin API in-process as the console's admin (whom ctx,
// the context of a consoleHandler request, carries); out, when not nil,
// receives the decoded body of a successful answer.
func (c *Server) api(ctx context.Context, method, path string, body any, out any) (apiResult, error) {
	var rd io.Reader = http.NoBody
	if raw, ok := body.([]byte); ok {
		rd = bytes.NewReader(raw)
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{}, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return apiResult{}, fmt.Errorf("console call %s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Body = http.MaxBytesReader(nil, req.Body, api.MaxBody)
	rec := &recorder{h: http.Header{}}
	c.adminAPI.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	res := apiResult{Status: rec.code, Body: rec.b.Bytes()}
	if out != nil && res.Status < 300 && len(res.Body) > 0 {
		if err := json.Unmarshal(res.Body, out); err != nil {
			return res, fmt.Errorf("console call %s %s: decode answer: %w", method, path, err)
		}
	}
	return res, nil
}

// consoleHandler wraps a page: it needs a live session (else the sign-in
// page), and for POST the same origin and the session's CSRF token.
func (c *Server) consoleHandler(h func(w http.ResponseWriter, r *http.Request, cs *consoleSession)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cs, err := c.sessionFromRequest(r)
		if err != nil {
			if !errors.Is(err, api.ErrAdminAuth) {
				c.log.Error("console session", "err", err)
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/console/login", http.StatusSeeOther)
				return
			}
			consoleHeaders(w)
			http.Error(w, "your console session ended: sign in again", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet {
			if !c.sameOrigin(r) || !checkCSRF(r, cs.csrf) {
				consoleHeaders(w)
				http.Error(w, "this form is stale or came from another site (CSRF check failed): reload the page", http.StatusForbidden)
				return
			}
		}
		h(w, r.WithContext(ctx), cs)
	}
}

// Routes registers the console's pages, under /console/, on mux.
func (c *Server) Routes(mux *http.ServeMux) {
	mux.Handle("GET /console/static/", consoleStatic())
	mux.HandleFunc("GET /console/login", c.handleConsoleLoginPage)
	mux.HandleFunc("POST /console/login", c.handleConsoleLogin)
	mux.HandleFunc("POST /console/logout", c.consoleHandler(c.handleConsoleLogout))
	mux.HandleFunc("GET /console/login/oidc", c.handleConsoleOIDCStart)
	mux.HandleFunc("GET "+OIDCCallbackPath, c.handleConsoleOIDCCallback)
	mux.HandleFunc("GET /console/{$}", c.consoleHandler(c.pageOverview))
	mux.HandleFunc("GET /console/resources", c.consoleHandler(c.pageResources))
	mux.HandleFunc("GET /console/resources/new", c.consoleHandler(c.pageResourceForm))
	mux.HandleFunc("GET /console/resources/{name}", c.consoleHandler(c.pageResourceForm))
	mux.HandleFunc("POST /console/resources", c.consoleHandler(c.postResource))
	mux.HandleFunc("POST /console/resources/{name}", c.consoleHandler(c.postResource))
	mux.HandleFunc("POST /console/resources/{name}/delete", c.consoleHandler(c.deleteResource))
	for _, k := range namedKinds {
		mux.HandleFunc("GET /console/"+k.Path, c.consoleHandler(c.pageNamed(k)))
		mux.HandleFunc("POST /console/"+k.Path, c.consoleHandler(c.postNamed(k)))
		mux.HandleFunc("POST /console/"+k.Path+"/{name}/delete", c.consoleHandler(c.deleteNamedKind(k)))
	}
	mux.HandleFunc("GET /console/users", c.consoleHandler(c.pageUsers))
	mux.HandleFunc("POST /console/users", c.consoleHandler(c.postUser))
	mux.HandleFunc("GET /console/service-accounts", c.consoleHandler(c.pageAccounts))
	mux.HandleFunc("POST /console/service-accounts", c.consoleHandler(c.postAccount))
	mux.HandleFunc("POST /console/service-accounts/{name}/keys", c.consoleHandler(c.postAccountKey))
	mux.HandleFunc("POST /console/service-accounts/{name}/keys/{key}/revoke", c.consoleHandler(c.postAccountKeyRevoke))
	mux.HandleFunc("GET /console/posture-profiles", c.consoleHandler(c.pagePosture))
	mux.HandleFunc("POST /console/posture-profiles", c.consoleHandler(c.postPosture))
	for _, k := range [][2]string{{"users", "user"}, {"service-accounts", "service account"}, {"posture-profiles", "posture profile"}} {
		mux.HandleFunc("POST /console/"+k[0]+"/{name}/delete", c.consoleHandler(func(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
			c.deleteNamed(w, r, cs, k[0], k[1])
		}))
	}
	mux.HandleFunc("GET /console/connectors", c.consoleHandler(c.pageConnectors))
	mux.HandleFunc("GET /console/connectors/health", c.consoleHandler(c.pageHealth))
	mux.HandleFunc("POST /console/connectors/mint", c.consoleHandler(c.postMint))
	mux.HandleFunc("GET /console/devices", c.consoleHandler(c.pageDevices))
	mux.HandleFunc("POST /console/devices/{id}/revoke", c.consoleHandler(c.postRevoke))
	mux.HandleFunc("POST /console/sessions/{id}/revoke", c.consoleHandler(c.postRevoke))
	mux.HandleFunc("GET /console/requests", c.consoleHandler(c.pageRequests))
	mux.HandleFunc("POST /console/requests/{id}/{verb}", c.consoleHandler(c.postDecision))
	mux.HandleFunc("GET /console/audit", c.consoleHandler(c.pageAudit))
	mux.HandleFunc("GET /console/admins", c.consoleHandler(c.pageAdmins))
	mux.HandleFunc("POST /console/admins", c.consoleHandler(c.postAdmin))
	mux.HandleFunc("POST /console/admins/{id}/role", c.consoleHandler(c.postAdminRole))
	mux.HandleFunc("POST /console/admins/{id}/delete", c.consoleHandler(c.postAdminDelete))
	mux.HandleFunc("POST /console/admin-tokens", c.consoleHandler(c.postAdminToken))
	mux.HandleFunc("POST /console/admin-tokens/{id}/revoke", c.consoleHandler(c.postAdminRevoke(api.PathAdminTokens)))
	mux.HandleFunc("POST /console/admin-sessions/{id}/revoke", c.consoleHandler(c.postAdminRevoke(api.PathAdminSessions)))
	mux.HandleFunc("GET /console/apply", c.consoleHandler(c.pageApply))
	mux.HandleFunc("POST /console/apply", c.consoleHandler(c.postApply))
	mux.HandleFunc("GET /console/events", c.consoleHandler(c.pageEvents))
	mux.HandleFunc("GET /console/events/tail", c.consoleHandler(c.pageEventsTail))
}
