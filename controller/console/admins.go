package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"postern.dev/postern/controller/api"
)

// adminsPage is the Admins page's data.
type adminsPage struct {
	Admins   []api.AdminView
	Tokens   []api.AdminTokenView
	Sessions []api.AdminSessionView
	Roles    []string
	Minted   *api.AdminTokenView // a token just made, shown once
}

func (c *Server) pageAdmins(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	c.renderAdmins(w, r, cs, http.StatusOK, "", nil)
}

func (c *Server) renderAdmins(w http.ResponseWriter, r *http.Request, cs *consoleSession, status int, msg string, minted *api.AdminTokenView) {
	d := c.page(cs, "Admins", "admins")
	var as struct{ Items []api.AdminView }
	var ts struct{ Items []api.AdminTokenView }
	var ss struct{ Items []api.AdminSessionView }
	if c.listPage(r, cs, &d, api.PathAdmins, &as) {
		c.listPage(r, cs, &d, api.PathAdminTokens, &ts)
		c.listPage(r, cs, &d, api.PathAdminSessions, &ss)
	}
	c.renderForm(w, r, status, "admins", d, msg, adminsPage{Admins: as.Items, Tokens: ts.Items, Sessions: ss.Items, Roles: c.roles, Minted: minted})
}

// adminCall runs an admin-management API call for a form and either
// redirects with done or renders the page with the API's error.
func (c *Server) adminCall(w http.ResponseWriter, r *http.Request, cs *consoleSession, method, path string, body any, done string) {
	res, err := c.api(r.Context(), method, path, body, nil)
	if err == nil && res.Err() == "" {
		http.Redirect(w, r, "/console/admins?done="+url.QueryEscape(done), http.StatusSeeOther)
		return
	}
	msg := res.Err()
	if err != nil {
		msg = err.Error()
	}
	c.renderAdmins(w, r, cs, formStatus(res), msg, nil)
}

func (c *Server) postAdmin(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	req := api.AdminRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Role: r.PostFormValue("role"), Password: r.PostFormValue("password")}
	c.adminCall(w, r, cs, "POST", api.PathAdmins, req, "Added "+req.Name+" ("+req.Role+").")
}

func (c *Server) postAdminRole(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	id, role := r.PathValue("id"), r.PostFormValue("role")
	c.adminCall(w, r, cs, "PUT", api.PathAdmins+"/"+url.PathEscape(id), api.AdminRequest{Role: role}, "Role changed to "+role+".")
}

func (c *Server) postAdminDelete(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	id := r.PathValue("id")
	c.adminCall(w, r, cs, "DELETE", api.PathAdmins+"/"+url.PathEscape(id), nil, "Removed the admin with its tokens and sessions.")
}

func (c *Server) postAdminRevoke(path string) func(http.ResponseWriter, *http.Request, *consoleSession) {
	return func(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
		id := r.PathValue("id")
		c.adminCall(w, r, cs, "DELETE", path+"/"+url.PathEscape(id), nil, "Revoked "+id+".")
	}
}

// postAdminToken makes an API token and shows it this once.
func (c *Server) postAdminToken(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	req := api.AdminTokenRequest{Admin: r.PostFormValue("admin"), Role: r.PostFormValue("role"), Name: strings.TrimSpace(r.PostFormValue("name"))}
	if v := strings.TrimSpace(r.PostFormValue("ttl_days")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 3650 {
			c.renderAdmins(w, r, cs, http.StatusUnprocessableEntity, "ttl_days: must be a whole number of days from 0 (no expiry) to 3650", nil)
			return
		}
		req.TTLSeconds = int64(n) * 86400
	}
	var tv api.AdminTokenView
	res, err := c.api(r.Context(), "POST", api.PathAdminTokens, req, &tv)
	if err != nil || res.Err() != "" {
		msg := res.Err()
		if err != nil {
			msg = err.Error()
		}
		c.renderAdmins(w, r, cs, formStatus(res), msg, nil)
		return
	}
	c.renderAdmins(w, r, cs, http.StatusCreated, "", &tv)
}
