package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"postern.dev/postern/controller/adminapi"
)

// Console forms for users, service accounts and posture profiles. Each
// form first shows a field-by-field preview (before and after, validated
// by the same code and with the same messages as `apply`: the changed
// configuration goes through the controller's CheckSpec) and saves through the admin
// API, whose errors are apply's too. Objects the last applied file
// declares are marked: the next apply of that file overwrites console edits.

// diffRow is one field of a preview.
type diffRow struct {
	Field, Before, After string
	Changed              bool
}

// fieldDiff pairs before/after values of the same fields, in order.
func fieldDiff(fields []string, before, after map[string]string) []diffRow {
	out := make([]diffRow, 0, len(fields))
	for _, f := range fields {
		out = append(out, diffRow{Field: f, Before: before[f], After: after[f], Changed: before[f] != after[f]})
	}
	return out
}

// FormState is what every one of these forms carries besides its fields.
type FormState struct {
	Original  string // "" when creating
	Diff      []diffRow
	Previewed bool // the preview passed validation: Save is offered
	Managed   bool
	AppliedAt time.Time
	AppliedBy string
}

// managedBy fills the file-managed note for kind/name.
func (c *Server) managedBy(r *http.Request, kind, name string, f *FormState) {
	if name == "" {
		return
	}
	if rec, managed := c.fileManaged(r.Context()); managed[kind+"/"+name] {
		f.Managed, f.AppliedAt, f.AppliedBy = true, rec.At, rec.Actor
	}
}

// previewSpec applies mutate to a copy of the current configuration and
// validates it as apply does; the answer is apply's message, "" when valid.
func (c *Server) previewSpec(r *http.Request, cs *consoleSession, kind, name, original string, mutate func(*adminapi.Spec) error) string {
	if !cs.p.can(capWrite) {
		return fmt.Sprintf("%s (role %s) may not change the configuration", cs.p.Name, cs.p.Role)
	}
	var d pageData
	spec, ok := c.consoleSpec(r, cs, &d)
	if !ok {
		return d.Error
	}
	if original == "" || !strings.EqualFold(original, name) {
		if _, err := c.core.ObjectView(r.Context(), kind, name); err == nil {
			return fmt.Sprintf("%s %q already exists", kind, name)
		}
	}
	if err := mutate(spec); err != nil {
		return err.Error()
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Sprintf("encode the configuration: %v", err)
	}
	if err := c.core.CheckSpec(b); err != nil {
		return err.Error()
	}
	return ""
}

// mayWrite answers 403 (as the API would) when the admin's role may not
// change the configuration, so that a forged preview reveals nothing.
func (c *Server) mayWrite(w http.ResponseWriter, cs *consoleSession, nav string) bool {
	if cs.p.can(capWrite) {
		return true
	}
	d := c.page(cs, "Not allowed", nav)
	d.Error = fmt.Sprintf("%s (role %s) may not change the configuration", cs.p.Name, cs.p.Role)
	c.render(w, http.StatusForbidden, "message", d)
	return false
}

// formBool reads a checkbox.
func formBool(r *http.Request, name string) bool { return r.PostFormValue(name) != "" }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func listText(l []string) string {
	if len(l) == 0 {
		return "(none)"
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// saveRedirect answers a successful save.
func saveRedirect(w http.ResponseWriter, r *http.Request, path, msg string) {
	http.Redirect(w, r, "/console/"+path+"?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

// --- users ---

// userForm is the user form's data.
type userForm struct {
	FormState
	Email string
	// PasswordHash is the argon2id hash of the password typed into the
	// form: the preview page carries it in a hidden field, never the
	// password itself.
	PasswordHash string
	Disabled     bool
	Groups       []string // every group
	Selected     map[string]bool
}

type userRow struct {
	adminapi.UserView
	Groups  []string
	Managed bool
}

type usersPage struct {
	Users []userRow
	Form  userForm
}

// userGroups is the groups that list email.
func userGroups(spec *adminapi.Spec, email string) []string {
	out := []string{}
	for _, g := range spec.Groups {
		if slices.ContainsFunc(g.Users, func(u string) bool { return strings.EqualFold(u, email) }) {
			out = append(out, g.Name)
		}
	}
	return out
}

func (c *Server) pageUsers(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	f := userForm{Selected: map[string]bool{}}
	if edit := r.URL.Query().Get("edit"); edit != "" {
		f.Original, f.Email = edit, edit
	}
	c.renderUsers(w, r, cs, http.StatusOK, f, "")
}

func (c *Server) renderUsers(w http.ResponseWriter, r *http.Request, cs *consoleSession, status int, f userForm, msg string) {
	d := c.page(cs, "Users", "users")
	var users struct{ Items []adminapi.UserView }
	var page usersPage
	if spec, ok := c.consoleSpec(r, cs, &d); ok && c.listPage(r, cs, &d, "/api/v1/users?limit=1000", &users) {
		_, managed := c.fileManaged(r.Context())
		for _, u := range users.Items {
			page.Users = append(page.Users, userRow{u, userGroups(spec, u.Email), managed[adminapi.KindUser+"/"+u.Email]})
			if f.Original != "" && u.Email == f.Original && f.Diff == nil && msg == "" {
				f.Disabled = u.Disabled
				for _, g := range userGroups(spec, u.Email) {
					f.Selected[g] = true
				}
			}
		}
		for _, g := range spec.Groups {
			f.Groups = append(f.Groups, g.Name)
		}
	}
	c.managedBy(r, adminapi.KindUser, f.Original, &f.FormState)
	page.Form = f
	d.Error = msg
	d.Flash = r.URL.Query().Get("done")
	d.Data = page
	c.render(w, status, "users", d)
}

// userFields is a user's preview fields.
var userFields = []string{"email", "password", "disabled", "groups"}

func (c *Server) postUser(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	if !c.mayWrite(w, cs, "users") {
		return
	}
	f := userForm{Email: strings.TrimSpace(r.PostFormValue("email")), Disabled: formBool(r, "disabled"), Selected: map[string]bool{}}
	if pw := r.PostFormValue("password"); pw != "" {
		h, err := c.core.HashPassword(pw)
		if err != nil {
			c.renderUsers(w, r, cs, http.StatusInternalServerError, f, err.Error())
			return
		}
		f.PasswordHash = h
	} else if h := r.PostFormValue("password_hash"); h != "" && c.core.IsPasswordHash(h) {
		f.PasswordHash = h // typed before the preview
	}
	f.Original = strings.TrimSpace(r.PostFormValue("original"))
	if f.Original != "" {
		f.Email = f.Original // the e-mail address names the user: delete and add to change it
	}
	for _, g := range r.PostForm["groups"] {
		f.Selected[g] = true
	}
	var d pageData
	spec, ok := c.consoleSpec(r, cs, &d)
	if !ok {
		c.renderUsers(w, r, cs, http.StatusForbidden, f, d.Error)
		return
	}
	var cur adminapi.UserSpec
	if f.Original != "" {
		i := slices.IndexFunc(spec.Users, func(u adminapi.UserSpec) bool { return u.Email == f.Original })
		if i < 0 {
			c.renderUsers(w, r, cs, http.StatusNotFound, f, fmt.Sprintf("user %q not found (users of single sign-on are edited at the provider)", f.Original))
			return
		}
		cur = spec.Users[i]
	}
	want := slices.Sorted(func(yield func(string) bool) {
		for g := range f.Selected {
			if !yield(g) {
				return
			}
		}
	})
	before := map[string]string{"email": cur.Email, "password": "unchanged", "disabled": yesNo(cur.Disabled), "groups": listText(userGroups(spec, cur.Email))}
	if f.Original == "" {
		before = map[string]string{}
	}
	after := map[string]string{"email": strings.ToLower(f.Email), "password": "unchanged", "disabled": yesNo(f.Disabled), "groups": listText(want)}
	if f.PasswordHash != "" {
		after["password"] = "new password"
	} else if f.Original == "" {
		after["password"] = "none (single sign-on only)"
	}
	// The user as the API will store it, and the group lists to change.
	u := adminapi.UserSpec{Email: f.Email, PasswordHash: f.PasswordHash, Disabled: f.Disabled, OIDCSubject: cur.OIDCSubject}
	groupEdits := map[string][]string{}
	for _, g := range spec.Groups {
		in := slices.ContainsFunc(g.Users, func(e string) bool { return strings.EqualFold(e, cur.Email) && cur.Email != "" })
		users := slices.DeleteFunc(slices.Clone(g.Users), func(e string) bool { return cur.Email != "" && strings.EqualFold(e, cur.Email) })
		if f.Selected[g.Name] {
			users = append(users, f.Email)
		}
		if in != f.Selected[g.Name] || (in && !strings.EqualFold(cur.Email, f.Email)) {
			groupEdits[g.Name] = users
		}
	}
	for g := range f.Selected {
		if !slices.ContainsFunc(spec.Groups, func(x adminapi.GroupSpec) bool { return x.Name == g }) {
			c.renderUsers(w, r, cs, http.StatusUnprocessableEntity, f, fmt.Sprintf("group %q does not exist", g))
			return
		}
	}
	f.Diff = fieldDiff(userFields, before, after)
	msg := c.previewSpec(r, cs, adminapi.KindUser, f.Email, f.Original, func(s *adminapi.Spec) error {
		if f.PasswordHash == "" {
			u.PasswordHash = cur.PasswordHash
		}
		s.Users = adminapi.Upsert(s.Users, f.Original, u, func(x adminapi.UserSpec) string { return x.Email })
		for i := range s.Groups {
			if users, ok := groupEdits[s.Groups[i].Name]; ok {
				s.Groups[i].Users = users
			}
		}
		return nil
	})
	if msg != "" || r.PostFormValue("action") != "save" {
		f.Previewed = msg == ""
		status := http.StatusOK
		if msg != "" {
			status = http.StatusUnprocessableEntity
		}
		c.renderUsers(w, r, cs, status, f, msg)
		return
	}
	method, path := "POST", "/api/v1/users"
	if f.Original != "" {
		method, path = "PUT", "/api/v1/users/"+url.PathEscape(f.Original)
	}
	res, err := c.api(r.Context(), method, path, u, nil)
	for g, users := range groupEdits {
		if err != nil || res.Err() != "" {
			break
		}
		res, err = c.api(r.Context(), "PUT", "/api/v1/groups/"+url.PathEscape(g), adminapi.GroupSpec{Name: g, Users: users}, nil)
	}
	if err != nil || res.Err() != "" {
		msg := res.Err()
		if err != nil {
			msg = err.Error()
		}
		c.renderUsers(w, r, cs, formStatus(res), f, msg)
		return
	}
	saveRedirect(w, r, "users", "Saved user "+strings.ToLower(f.Email)+".")
}
