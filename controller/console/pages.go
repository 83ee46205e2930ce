package console

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

func (c *Server) handleConsoleLoginPage(w http.ResponseWriter, r *http.Request) {
	if _, _, err := c.sessionFromRequest(r); err == nil {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
		return
	}
	c.loginForm(w, http.StatusOK, "", "")
}

func (c *Server) loginForm(w http.ResponseWriter, status int, name, msg string) {
	pre := api.RandomHex(16)
	setCookie(w, consolePreCookie, pre, 600)
	c.render(w, status, "login", pageData{Title: "Sign in", CSRF: pre, Error: msg, Data: map[string]any{"Name": name, "SSO": c.core.ConsoleSSO()}})
}

func (c *Server) handleConsoleLogin(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(consolePreCookie)
	if err != nil || !c.sameOrigin(r) || !checkCSRF(r, ck.Value) {
		c.loginForm(w, http.StatusForbidden, "", "The sign-in form expired or came from another site: try again.")
		return
	}
	name := r.PostFormValue("name")
	secret, err := c.core.ConsoleSignIn(r.Context(), r, name, r.PostFormValue("password"))
	if err != nil {
		status := http.StatusUnauthorized
		msg := "Wrong name or password."
		if errors.Is(err, api.ErrThrottled) {
			status, msg = http.StatusTooManyRequests, "Too many failed sign-ins: "+err.Error()
		} else if !errors.Is(err, api.ErrUnauthenticated) {
			c.log.Error("console sign-in", "err", err)
			status, msg = http.StatusInternalServerError, "Sign-in failed on the server; see its log."
		}
		c.loginForm(w, status, name, msg)
		return
	}
	setCookie(w, consolePreCookie, "", -1)
	setCookie(w, consoleCookie, secret, int(c.ttl/time.Second))
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (c *Server) handleConsoleLogout(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	if err := c.endConsoleSession(r.Context(), cs); err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Error("console sign-out", "err", err)
	}
	setCookie(w, consoleCookie, "", -1)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

func (c *Server) page(cs *consoleSession, title, nav string) pageData {
	return pageData{Title: title, Nav: nav, Me: cs.p, CSRF: cs.csrf}
}

// overview is the overview page's data.
type overview struct {
	ConnectorsUp, ConnectorsDown int
	Connectors                   []adminapi.ConnectorView
	ActiveDevices, ActiveSess    int
	Pending                      int
	Refusals                     []reasonCount
	Flows                        int
	Window                       string
	Chart                        flowChart
}

type reasonCount struct {
	Reason string
	Count  int
}

// refused reports whether a flow event's result is a refusal.
func refused(result string) bool {
	switch result {
	case "ok", "closed by policy", "idle timeout", "reset", "":
		return false
	}
	return true
}

func (c *Server) pageOverview(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Overview", "overview")
	ov := overview{Window: "last hour"}
	if cs.p.can(capRead) {
		var conns struct{ Items []adminapi.ConnectorView }
		c.api(r.Context(), "GET", "/api/v1/connectors?limit=1000", nil, &conns)
		for _, cn := range conns.Items {
			if cn.Online {
				ov.ConnectorsUp++
			} else {
				ov.ConnectorsDown++
			}
		}
		ov.Connectors = conns.Items
		var sess struct{ Items []adminapi.SessionView }
		c.api(r.Context(), "GET", "/api/v1/sessions?limit=1000", nil, &sess)
		devs := map[string]bool{}
		for _, s := range sess.Items {
			if s.Active {
				ov.ActiveSess++
				devs[s.DeviceID] = true
			}
		}
		ov.ActiveDevices = len(devs)
		// Events are stamped with the wall clock when they arrive.
		st := newFlowStats(60, time.Now())
		counts := map[string]int{}
		c.scanEvents(r.Context(), cs, 0, 200, func(e api.EventView) { st.add(e.FlowEvent, e.ReceivedAt, counts) })
		ov.Flows = st.Flows
		ov.Chart = buildFlowChart(st)
		for k, n := range counts {
			ov.Refusals = append(ov.Refusals, reasonCount{k, n})
		}
		sort.Slice(ov.Refusals, func(i, j int) bool { return ov.Refusals[i].Count > ov.Refusals[j].Count })
	}
	if cs.p.can(capApprove) || cs.p.can(capRead) {
		var reqs []controlapi.AccessRequest
		c.api(r.Context(), "GET", controlapi.PathAccessRequests, nil, &reqs)
		for _, q := range reqs {
			if q.State == "pending" {
				ov.Pending++
			}
		}
	}
	d.Data = ov
	c.render(w, http.StatusOK, "overview", d)
}

// listPage fetches one admin API list into out, marking d denied on 403.
func (c *Server) listPage(r *http.Request, cs *consoleSession, d *pageData, path string, out any) bool {
	res, err := c.api(r.Context(), "GET", path, nil, out)
	return d.answered(res, err)
}

// answered records on the page how an admin API call failed (its error, or
// denied on 403) and reports whether it succeeded.
func (d *pageData) answered(res apiResult, err error) bool {
	switch {
	case err != nil:
		d.Error = err.Error()
	case res.Status == http.StatusForbidden:
		d.Denied = true
	case res.Err() != "":
		d.Error = res.Err()
	default:
		return true
	}
	return false
}

func (c *Server) pageConnectors(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	c.pageConnectorsWith(w, r, cs, "", nil, "")
}

// healthData is the connectors' and relays' live health.
type healthData struct {
	Connectors []adminapi.ConnectorView
	Relays     []adminapi.RelayView
	At         time.Time
}

func (c *Server) health(r *http.Request, cs *consoleSession, d *pageData) healthData {
	var conns struct{ Items []adminapi.ConnectorView }
	var relays struct{ Items []adminapi.RelayView }
	if c.listPage(r, cs, d, "/api/v1/connectors?limit=1000", &conns) {
		c.listPage(r, cs, d, "/api/v1/relays?limit=1000", &relays)
	}
	return healthData{conns.Items, relays.Items, time.Now()}
}

// pageHealth answers the connectors page's poll (every 5 s) with the
// health tables alone.
func (c *Server) pageHealth(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	var d pageData
	h := c.health(r, cs, &d)
	if d.Denied || d.Error != "" {
		msg := d.Error
		if d.Denied {
			msg = "your role may not read connectors"
		}
		c.renderFragment(w, http.StatusForbidden, "healtherror", msg)
		return
	}
	c.renderFragment(w, http.StatusOK, "health", h)
}

// humanBytes writes a byte count with a binary unit.
func humanBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return strconv.FormatFloat(n, 'f', 1, 64) + " " + units[i]
}

// enrollCommand is the command line that enrolls a component with a token
// (the token carries the controller's URL and CA fingerprint); a relay also
// needs its listening addresses and public IP, left as placeholders.
func enrollCommand(kind, token string) string {
	if kind == adminapi.KindRelay {
		return "postern-relay --token " + token + " --listen-udp :3478 --listen-tls :443 --public-ip PUBLIC_IP"
	}
	return "postern-connector --token " + token
}

func (c *Server) postMint(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	kind := r.PostFormValue("kind")
	path := "/api/v1/connector-tokens"
	if kind == adminapi.KindRelay {
		path = "/api/v1/relay-tokens"
	}
	ttl := 0
	if v := strings.TrimSpace(r.PostFormValue("ttl_hours")); v != "" {
		h, err := strconv.Atoi(v)
		if err != nil || h < 1 || h > 24*30 {
			c.pageConnectorsWith(w, r, cs, "ttl_hours: must be a whole number of hours from 1 to 720", nil, "")
			return
		}
		ttl = h * 3600
	}
	var m api.MintResponse
	res, err := c.api(r.Context(), "POST", path, api.MintRequest{Name: strings.TrimSpace(r.PostFormValue("name")), TTLSeconds: ttl}, &m)
	if err != nil || res.Err() != "" {
		msg := res.Err()
		if err != nil {
			msg = err.Error()
		}
		c.pageConnectorsWith(w, r, cs, msg, nil, "")
		return
	}
	c.pageConnectorsWith(w, r, cs, "", &m, enrollCommand(m.Kind, m.Token))
}

// pageConnectorsWith renders the connectors page after a mint: the token
// is shown this once (the page is not cached: Cache-Control no-store).
func (c *Server) pageConnectorsWith(w http.ResponseWriter, r *http.Request, cs *consoleSession, msg string, m *api.MintResponse, cmd string) {
	d := c.page(cs, "Connectors and relays", "connectors")
	h := c.health(r, cs, &d)
	if msg != "" {
		d.Error = msg
	}
	d.Data = &struct {
		Health  healthData
		Minted  *api.MintResponse
		Command string
	}{h, m, cmd}
	status := http.StatusOK
	if msg != "" {
		status = http.StatusUnprocessableEntity
	}
	c.render(w, status, "connectors", d)
}

// deviceRow is a device with its posture and when it was last seen.
type deviceRow struct {
	adminapi.Device
	Principal string // e-mail or service account name
	Report    string // the latest posture report, summarized ("" none)
	Satisfied []string
	Failed    []string // "profile: why"
	LastSeen  time.Time
	SeenHow   string
}

func (c *Server) pageDevices(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Devices and sessions", "devices")
	var data struct {
		Users    []adminapi.UserView
		Devices  []deviceRow
		Sessions []adminapi.SessionView
	}
	var users struct{ Items []adminapi.UserView }
	var devs struct{ Items []adminapi.Device }
	var sess struct{ Items []adminapi.SessionView }
	if c.listPage(r, cs, &d, "/api/v1/users?limit=1000", &users) &&
		c.listPage(r, cs, &d, "/api/v1/devices?limit=1000", &devs) && c.listPage(r, cs, &d, "/api/v1/sessions?limit=1000", &sess) {
		data.Devices = c.deviceRows(r, cs, devs.Items, sess.Items)
	}
	data.Users, data.Sessions = users.Items, sess.Items
	d.Flash = r.URL.Query().Get("done")
	d.Data = &data
	c.render(w, http.StatusOK, "devices", d)
}

// deviceRows adds posture (the latest signed report and the profiles it
// satisfies, from the policy model) and last seen: the latest of its
// sign-ins, posture reports and flow events. Only called once the admin's
// role has read the device list through the API.
func (c *Server) deviceRows(r *http.Request, cs *consoleSession, devs []adminapi.Device, sess []adminapi.SessionView) []deviceRow {
	names := c.eventNames(r.Context(), cs)
	seen := map[string]time.Time{}
	how := map[string]string{}
	note := func(dev string, t time.Time, what string) {
		if t.After(seen[dev]) {
			seen[dev], how[dev] = t, what
		}
	}
	for _, s := range sess {
		note(s.DeviceID, s.Created, "sign-in")
	}
	c.scanEvents(r.Context(), cs, 0, 200, func(e api.EventView) { note(e.Device, e.ReceivedAt, "flow") })
	rows := make([]deviceRow, 0, len(devs))
	for _, dv := range devs {
		row := deviceRow{Device: dv, Principal: names.principals[dv.PrincipalID]}
		if row.Principal == "" {
			row.Principal = dv.PrincipalID
		}
		dp := c.core.DevicePosture(dv.ID)
		if p := dp.Report; p != nil {
			row.Report = fmt.Sprintf("%s %s, disk encryption %s, firewall %s, client %s", p.OS, p.OSVersion, onOff(p.DiskEncryption), onOff(p.Firewall), p.ClientVersion)
			note(dv.ID, dp.Reported, "posture report")
		}
		row.Satisfied = dp.Satisfied
		for _, name := range slices.Sorted(maps.Keys(dp.Failed)) {
			row.Failed = append(row.Failed, name+": "+dp.Failed[name])
		}
		row.LastSeen, row.SeenHow = seen[dv.ID], how[dv.ID]
		rows = append(rows, row)
	}
	return rows
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// postRevoke revokes a device or a session (which also revokes its device,
// as the API does).
func (c *Server) postRevoke(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	kind := "devices"
	if strings.HasPrefix(r.URL.Path, "/console/sessions/") {
		kind = "sessions"
	}
	id := r.PathValue("id")
	res, err := c.api(r.Context(), "DELETE", "/api/v1/"+kind+"/"+url.PathEscape(id), nil, nil)
	if err == nil && res.Err() != "" {
		err = errors.New(res.Err())
	}
	if err != nil {
		d := c.page(cs, "Users, devices and sessions", "devices")
		d.Error = err.Error()
		c.render(w, statusOf(res), "message", d)
		return
	}
	http.Redirect(w, r, "/console/devices?done="+url.QueryEscape("Revoked "+strings.TrimSuffix(kind, "s")+" "+id+"."), http.StatusSeeOther)
}

func statusOf(res apiResult) int {
	if res.Status >= 400 {
		return res.Status
	}
	return http.StatusInternalServerError
}

func (c *Server) pageRequests(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Access requests", "requests")
	var reqs []controlapi.AccessRequest
	c.listPage(r, cs, &d, controlapi.PathAccessRequests, &reqs)
	d.Flash = r.URL.Query().Get("done")
	d.Data = reqs
	c.render(w, http.StatusOK, "requests", d)
}

func (c *Server) postDecision(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	verb := r.PathValue("verb")
	if verb != "approve" && verb != "deny" {
		http.NotFound(w, r)
		return
	}
	id := r.PathValue("id")
	dec := controlapi.AccessDecision{Reason: strings.TrimSpace(r.PostFormValue("reason")), Duration: strings.TrimSpace(r.PostFormValue("duration"))}
	var out controlapi.AccessRequest
	res, err := c.api(r.Context(), "POST", controlapi.PathAccessRequests+"/"+url.PathEscape(id)+"/"+verb, dec, &out)
	if err == nil && res.Err() != "" {
		err = errors.New(res.Err())
	}
	if err != nil {
		d := c.page(cs, "Access requests", "requests")
		var reqs []controlapi.AccessRequest
		c.listPage(r, cs, &d, controlapi.PathAccessRequests, &reqs)
		d.Error = err.Error()
		d.Data = reqs
		c.render(w, statusOf(res), "requests", d)
		return
	}
	http.Redirect(w, r, "/console/requests?done="+url.QueryEscape("Request "+id+" is now "+out.State+"."), http.StatusSeeOther)
}

// auditFilter is the audit page's filter form.
type auditFilter struct {
	Actor, Kind, Object, Action string
	Since                       string // a duration: 1h, 24h, 168h
}

func (f auditFilter) match(e store.AuditEntry, since time.Time) bool {
	has := func(field, q string) bool {
		return q == "" || strings.Contains(strings.ToLower(field), strings.ToLower(q))
	}
	return has(e.Actor, f.Actor) && has(e.Kind, f.Kind) && has(e.Action, f.Action) &&
		(has(e.Name, f.Object) || has(e.ObjectID, f.Object)) && (since.IsZero() || !e.At.Before(since))
}

func (c *Server) pageAudit(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Audit log", "audit")
	q := r.URL.Query()
	f := auditFilter{Actor: q.Get("actor"), Kind: q.Get("kind"), Object: q.Get("object"), Action: q.Get("action"), Since: q.Get("since")}
	var since time.Time
	if f.Since != "" {
		dur, err := time.ParseDuration(f.Since)
		if err != nil || dur <= 0 {
			d.Error = "since: " + strconv.Quote(f.Since) + " is not a duration like 1h or 168h"
		} else {
			since = c.now().Add(-dur)
		}
	}
	var entries []store.AuditEntry
	cursor := ""
	for range 100 {
		var page struct {
			Items      []store.AuditEntry
			NextCursor string `json:"next_cursor"`
		}
		if !c.listPage(r, cs, &d, "/api/v1/audit?limit=1000&cursor="+cursor, &page) {
			break
		}
		for _, e := range page.Items {
			if f.match(e, since) {
				entries = append(entries, e)
			}
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	// Newest first, at most 500.
	for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
		entries[i], entries[j] = entries[j], entries[i]
	}
	if len(entries) > 500 {
		entries = entries[:500]
	}
	d.Data = struct {
		Filter  auditFilter
		Entries []store.AuditEntry
	}{f, entries}
	c.render(w, http.StatusOK, "audit", d)
}
