package console

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
)

// Console forms for service accounts (and their keys) and posture profiles;
// see console_principals.go for the preview-then-save flow.

// accountForm is the service account form's data.
type accountForm struct {
	FormState
	Name     string
	Groups   []string // every group
	Selected map[string]bool
}

type accountRow struct {
	adminapi.ServiceAccountView
	Managed bool
}

type accountsPage struct {
	Accounts []accountRow
	Form     accountForm
	NewKey   *controlapi.ServiceKey
	KeyFile  string // the key as the JSON file postern-client reads
}

func (c *Server) pageAccounts(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	f := accountForm{Selected: map[string]bool{}}
	if edit := r.URL.Query().Get("edit"); edit != "" {
		f.Original, f.Name = edit, edit
	}
	c.renderAccounts(w, r, cs, http.StatusOK, accountsPage{Form: f}, "")
}

func (c *Server) renderAccounts(w http.ResponseWriter, r *http.Request, cs *consoleSession, status int, page accountsPage, msg string) {
	d := c.page(cs, "Service accounts", "service-accounts")
	f := &page.Form
	var sas struct{ Items []adminapi.ServiceAccountView }
	if spec, ok := c.consoleSpec(r, cs, &d); ok && c.listPage(r, cs, &d, "/api/v1/service-accounts?limit=1000", &sas) {
		_, managed := c.fileManaged(r.Context())
		for _, a := range sas.Items {
			page.Accounts = append(page.Accounts, accountRow{a, managed[adminapi.KindServiceAccount+"/"+a.Name]})
			if f.Original == a.Name && f.Diff == nil && msg == "" {
				for _, g := range a.Groups {
					f.Selected[g] = true
				}
			}
		}
		for _, g := range spec.Groups {
			f.Groups = append(f.Groups, g.Name)
		}
	}
	c.managedBy(r, adminapi.KindServiceAccount, f.Original, &f.FormState)
	c.renderForm(w, r, status, "accounts", d, msg, page)
}

func (c *Server) postAccount(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	if !c.mayWrite(w, cs, "service-accounts") {
		return
	}
	f := accountForm{Name: strings.TrimSpace(r.PostFormValue("name")), Selected: map[string]bool{}}
	f.Original = strings.TrimSpace(r.PostFormValue("original"))
	for _, g := range r.PostForm["groups"] {
		f.Selected[g] = true
	}
	var d pageData
	spec, ok := c.consoleSpec(r, cs, &d)
	if !ok {
		c.renderAccounts(w, r, cs, http.StatusForbidden, accountsPage{Form: f}, d.Error)
		return
	}
	before := map[string]string{}
	if f.Original != "" {
		i := slices.IndexFunc(spec.ServiceAccounts, func(a adminapi.ServiceAccountSpec) bool { return a.Name == f.Original })
		if i < 0 {
			c.renderAccounts(w, r, cs, http.StatusNotFound, accountsPage{Form: f}, fmt.Sprintf("service account %q not found", f.Original))
			return
		}
		before = map[string]string{"name": f.Original, "groups": listText(spec.ServiceAccounts[i].Groups)}
	}
	sa := adminapi.ServiceAccountSpec{Name: f.Name, Groups: slices.Sorted(maps.Keys(f.Selected))}
	f.Diff = fieldDiff([]string{"name", "groups"}, before, map[string]string{"name": sa.Name, "groups": listText(sa.Groups)})
	msg := c.previewSpec(r, cs, adminapi.KindServiceAccount, sa.Name, f.Original, func(s *adminapi.Spec) error {
		s.ServiceAccounts = adminapi.Upsert(s.ServiceAccounts, f.Original, sa, func(a adminapi.ServiceAccountSpec) string { return a.Name })
		return nil
	})
	if msg != "" || r.PostFormValue("action") != "save" {
		f.Previewed = msg == ""
		c.renderAccounts(w, r, cs, previewStatus(msg), accountsPage{Form: f}, msg)
		return
	}
	method, path := "POST", "/api/v1/service-accounts"
	if f.Original != "" {
		method, path = "PUT", "/api/v1/service-accounts/"+url.PathEscape(f.Original)
	}
	res, err := c.api(r.Context(), method, path, sa, nil)
	if msg := apiMsg(res, err); msg != "" {
		c.renderAccounts(w, r, cs, formStatus(res), accountsPage{Form: f}, msg)
		return
	}
	saveRedirect(w, r, "service-accounts", "Saved service account "+sa.Name+".")
}

// postAccountKey creates a key for a service account; the page shows it once.
func (c *Server) postAccountKey(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	if !c.mayWrite(w, cs, "service-accounts") {
		return
	}
	name := r.PathValue("name")
	empty := accountsPage{Form: accountForm{Selected: map[string]bool{}}}
	var body any
	if v := strings.TrimSpace(r.PostFormValue("ttl_days")); v != "" {
		days, err := strconv.Atoi(v)
		if err != nil || days < 1 || days > 3650 {
			c.renderAccounts(w, r, cs, http.StatusUnprocessableEntity, empty, "ttl_days: must be a whole number of days from 1 to 3650")
			return
		}
		body = map[string]int{"ttl_seconds": days * 86400}
	}
	var k controlapi.ServiceKey
	res, err := c.api(r.Context(), "POST", "/api/v1/service-accounts/"+url.PathEscape(name)+"/keys", body, &k)
	if msg := apiMsg(res, err); msg != "" {
		c.renderAccounts(w, r, cs, formStatus(res), empty, msg)
		return
	}
	file, _ := json.MarshalIndent(k, "", "  ")
	empty.NewKey, empty.KeyFile = &k, string(file)
	c.renderAccounts(w, r, cs, http.StatusCreated, empty, "")
}

func (c *Server) postAccountKeyRevoke(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	if !c.mayWrite(w, cs, "service-accounts") {
		return
	}
	name, key := r.PathValue("name"), r.PathValue("key")
	res, err := c.api(r.Context(), "DELETE", "/api/v1/service-accounts/"+url.PathEscape(name)+"/keys/"+url.PathEscape(key), nil, nil)
	if msg := apiMsg(res, err); msg != "" {
		c.renderAccounts(w, r, cs, statusOf(res), accountsPage{Form: accountForm{Selected: map[string]bool{}}}, msg)
		return
	}
	saveRedirect(w, r, "service-accounts", "Revoked key "+key+" of "+name+".")
}

// apiMsg is an API call's failure as one message, "" on success.
func apiMsg(res apiResult, err error) string {
	if err != nil {
		return err.Error()
	}
	return res.Err()
}

func previewStatus(msg string) int {
	if msg != "" {
		return http.StatusUnprocessableEntity
	}
	return http.StatusOK
}

// --- posture profiles ---

// postureForm is the posture profile form's data.
type postureForm struct {
	FormState
	P     adminapi.PostureProfileSpec
	OSMin string // "linux=6.1" lines
}

type postureRow struct {
	adminapi.PostureProfileSpec
	OSMin   string
	Managed bool
}

type posturePage struct {
	Profiles []postureRow
	Form     postureForm
}

// osMinText writes os_min as sorted "os=version" lines.
func osMinText(m map[string]string, sep string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, sep)
}

// parseOSMin reads "os=version" lines (or "os: version").
func parseOSMin(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, line := range splitList(s) {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			k, v, ok = strings.Cut(line, ":")
		}
		if !ok {
			return nil, fmt.Errorf("os_min: %q is not OS=VERSION (e.g. linux=6.1)", line)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

func postureText(p adminapi.PostureProfileSpec) map[string]string {
	return map[string]string{"name": p.Name, "os_min": osMinText(p.OSMin, ", "), "disk_encryption": yesNo(p.DiskEncryption),
		"firewall": yesNo(p.Firewall), "client_min": p.ClientMin}
}

var postureFields = []string{"name", "os_min", "disk_encryption", "firewall", "client_min"}

func (c *Server) pagePosture(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	c.renderPosture(w, r, cs, http.StatusOK, postureForm{FormState: FormState{Original: r.URL.Query().Get("edit")}}, "")
}

func (c *Server) renderPosture(w http.ResponseWriter, r *http.Request, cs *consoleSession, status int, f postureForm, msg string) {
	d := c.page(cs, "Posture profiles", "posture-profiles")
	var page posturePage
	if spec, ok := c.consoleSpec(r, cs, &d); ok {
		_, managed := c.fileManaged(r.Context())
		for _, p := range spec.PostureProfiles {
			page.Profiles = append(page.Profiles, postureRow{p, osMinText(p.OSMin, ", "), managed[adminapi.KindPostureProfile+"/"+p.Name]})
			if p.Name == f.Original && f.P.Name == "" {
				f.P, f.OSMin = p, osMinText(p.OSMin, "\n")
			}
		}
	}
	c.managedBy(r, adminapi.KindPostureProfile, f.Original, &f.FormState)
	page.Form = f
	c.renderForm(w, r, status, "posture", d, msg, page)
}

func (c *Server) postPosture(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	if !c.mayWrite(w, cs, "posture-profiles") {
		return
	}
	f := postureForm{FormState: FormState{Original: strings.TrimSpace(r.PostFormValue("original"))}, OSMin: r.PostFormValue("os_min"),
		P: adminapi.PostureProfileSpec{Name: strings.TrimSpace(r.PostFormValue("name")), DiskEncryption: formBool(r, "disk_encryption"),
			Firewall: formBool(r, "firewall"), ClientMin: strings.TrimSpace(r.PostFormValue("client_min"))}}
	var err error
	if f.P.OSMin, err = parseOSMin(f.OSMin); err != nil {
		c.renderPosture(w, r, cs, http.StatusUnprocessableEntity, f, err.Error())
		return
	}
	var d pageData
	spec, ok := c.consoleSpec(r, cs, &d)
	if !ok {
		c.renderPosture(w, r, cs, http.StatusForbidden, f, d.Error)
		return
	}
	before := map[string]string{}
	if f.Original != "" {
		i := slices.IndexFunc(spec.PostureProfiles, func(p adminapi.PostureProfileSpec) bool { return p.Name == f.Original })
		if i < 0 {
			c.renderPosture(w, r, cs, http.StatusNotFound, f, fmt.Sprintf("posture profile %q not found", f.Original))
			return
		}
		before = postureText(spec.PostureProfiles[i])
	}
	f.Diff = fieldDiff(postureFields, before, postureText(f.P))
	msg := c.previewSpec(r, cs, adminapi.KindPostureProfile, f.P.Name, f.Original, func(s *adminapi.Spec) error {
		s.PostureProfiles = adminapi.Upsert(s.PostureProfiles, f.Original, f.P, func(p adminapi.PostureProfileSpec) string { return p.Name })
		return nil
	})
	if msg != "" || r.PostFormValue("action") != "save" {
		f.Previewed = msg == ""
		c.renderPosture(w, r, cs, previewStatus(msg), f, msg)
		return
	}
	method, path := "POST", "/api/v1/posture-profiles"
	if f.Original != "" {
		method, path = "PUT", "/api/v1/posture-profiles/"+url.PathEscape(f.Original)
	}
	res, err := c.api(r.Context(), method, path, f.P, nil)
	if msg := apiMsg(res, err); msg != "" {
		c.renderPosture(w, r, cs, formStatus(res), f, msg)
		return
	}
	saveRedirect(w, r, "posture-profiles", "Saved posture profile "+f.P.Name+".")
}
