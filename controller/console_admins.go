package controller

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// adminsPage is the Admins page's data.
type adminsPage struct {
	Admins   []AdminView
	Tokens   []AdminTokenView
	Sessions []AdminSessionView
	Roles    []string
	Minted   *AdminTokenView // a token just made, shown once
}

func (c *Controller) pageAdmins(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	c.renderAdmins(w, r, cs, http.StatusOK, "", nil)
}

func (c *Controller) renderAdmins(w http.ResponseWriter, r *http.Request, cs *consoleSession, status int, msg string, minted *AdminTokenView) {
	d := c.page(cs, "Admins", "admins")
	var as struct{ Items []AdminView }
	var ts struct{ Items []AdminTokenView }
	var ss struct{ Items []AdminSessionView }
	if c.listPage(r, cs, &d, PathAdmins, &as) {
		c.listPage(r, cs, &d, PathAdminTokens, &ts)
		c.listPage(r, cs, &d, PathAdminSessions, &ss)
	}
	c.renderForm(w, r, status, "admins", d, msg, adminsPage{Admins: as.Items, Tokens: ts.Items, Sessions: ss.Items, Roles: Roles, Minted: minted})
}

// adminCall runs an admin-management API call for a form and either
// redirects with done or renders the page with the API's error.
func (c *Controller) adminCall(w http.ResponseWriter, r *http.Request, cs *consoleSession, method, path string, body any, done string) {
	res, err := c.api(r.Context(), cs.p, method, path, body, nil)
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

func (c *Controller) postAdmin(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	req := AdminRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Role: r.PostFormValue("role"), Password: r.PostFormValue("password")}
	c.adminCall(w, r, cs, "POST", PathAdmins, req, "Added "+req.Name+" ("+req.Role+").")
}

func (c *Controller) postAdminRole(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	id, role := r.PathValue("id"), r.PostFormValue("role")
	c.adminCall(w, r, cs, "PUT", PathAdmins+"/"+url.PathEscape(id), AdminRequest{Role: role}, "Role changed to "+role+".")
}

func (c *Controller) postAdminDelete(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	id := r.PathValue("id")
	c.adminCall(w, r, cs, "DELETE", PathAdmins+"/"+url.PathEscape(id), nil, "Removed the admin with its tokens and sessions.")
}

func (c *Controller) postAdminRevoke(path string) func(http.ResponseWriter, *http.Request, *consoleSession) {
	return func(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
		id := r.PathValue("id")
		c.adminCall(w, r, cs, "DELETE", path+"/"+url.PathEscape(id), nil, "Revoked "+id+".")
	}
}

// postAdminToken makes an API token and shows it this once.
func (c *Controller) postAdminToken(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	req := AdminTokenRequest{Admin: r.PostFormValue("admin"), Role: r.PostFormValue("role"), Name: strings.TrimSpace(r.PostFormValue("name"))}
	if v := strings.TrimSpace(r.PostFormValue("ttl_days")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 3650 {
			c.renderAdmins(w, r, cs, http.StatusUnprocessableEntity, "ttl_days: must be a whole number of days from 0 (no expiry) to 3650", nil)
			return
		}
		req.TTLSeconds = int64(n) * 86400
	}
	var tv AdminTokenView
	res, err := c.api(r.Context(), cs.p, "POST", PathAdminTokens, req, &tv)
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
