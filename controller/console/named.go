package console

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"postern.dev/postern/controller/adminapi"
)

// namedKind is an object made of a name and a list of member names: a group
// (its users' e-mail addresses) or a remote network (its connectors).
type namedKind struct {
	Path, Kind, Singular, Title string
	Members, MembersHelp        string // the list's label and hint
	members                     func(s *adminapi.Spec) []namedItem
	body                        func(name string, members []string) any
}

type namedItem struct {
	Name    string
	Members []string
}

var namedKinds = []namedKind{
	{Path: "groups", Kind: adminapi.KindGroup, Singular: "group", Title: "Groups", Members: "Users", MembersHelp: "e-mail addresses, one a line",
		members: func(s *adminapi.Spec) []namedItem {
			return namedItems(s.Groups, func(g adminapi.GroupSpec) namedItem { return namedItem{g.Name, g.Users} })
		},
		body: func(name string, m []string) any { return adminapi.GroupSpec{Name: name, Users: m} }},
	{Path: "networks", Kind: adminapi.KindNetwork, Singular: "remote network", Title: "Remote networks", Members: "Connectors", MembersHelp: "connector names, one a line",
		members: func(s *adminapi.Spec) []namedItem {
			return namedItems(s.RemoteNetworks, func(n adminapi.NetworkSpec) namedItem { return namedItem{n.Name, n.Connectors} })
		},
		body: func(name string, m []string) any { return adminapi.NetworkSpec{Name: name, Connectors: m} }},
}

// namedItems lists xs as named items (never nil: the page shows an empty
// list).
func namedItems[T any](xs []T, item func(T) namedItem) []namedItem {
	out := []namedItem{}
	for _, x := range xs {
		out = append(out, item(x))
	}
	return out
}

// namedPage is the page's data: the list and the create/edit form.
type namedPage struct {
	K        namedKind
	Items    []namedItem
	Managed  map[string]bool
	Original string
	Name     string
	Members  string
}

func (c *Server) pageNamed(k namedKind) func(http.ResponseWriter, *http.Request, *consoleSession) {
	return func(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
		c.renderNamed(w, r, cs, k, http.StatusOK, namedPage{}, "")
	}
}

func (c *Server) renderNamed(w http.ResponseWriter, r *http.Request, cs *consoleSession, k namedKind, status int, np namedPage, msg string) {
	d := c.page(cs, k.Title, k.Path)
	np.K = k
	if spec, ok := c.consoleSpec(r, cs, &d); ok {
		np.Items = k.members(spec)
		_, managed := c.fileManaged(r.Context())
		np.Managed = map[string]bool{}
		for _, it := range np.Items {
			np.Managed[it.Name] = managed[k.Kind+"/"+it.Name]
		}
		if edit := r.URL.Query().Get("edit"); edit != "" && np.Original == "" {
			if i := slices.IndexFunc(np.Items, func(it namedItem) bool { return it.Name == edit }); i >= 0 {
				np.Original, np.Name, np.Members = edit, edit, strings.Join(np.Items[i].Members, "\n")
			}
		}
	}
	c.renderForm(w, r, status, "named", d, msg, np)
}

func (c *Server) postNamed(k namedKind) func(http.ResponseWriter, *http.Request, *consoleSession) {
	return func(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
		name := strings.TrimSpace(r.PostFormValue("name"))
		original := strings.TrimSpace(r.PostFormValue("original"))
		method, path := "POST", "/api/v1/"+k.Path
		if original != "" {
			method, path = "PUT", "/api/v1/"+k.Path+"/"+url.PathEscape(original)
		}
		res, err := c.api(r.Context(), method, path, k.body(name, splitList(r.PostFormValue("members"))), nil)
		if err == nil && res.Err() == "" {
			http.Redirect(w, r, "/console/"+k.Path+"?done="+url.QueryEscape("Saved "+k.Singular+" "+name+"."), http.StatusSeeOther)
			return
		}
		msg := res.Err()
		if err != nil {
			msg = err.Error()
		}
		c.renderNamed(w, r, cs, k, formStatus(res), namedPage{Original: original, Name: name, Members: r.PostFormValue("members")}, msg)
	}
}

func (c *Server) deleteNamedKind(k namedKind) func(http.ResponseWriter, *http.Request, *consoleSession) {
	return func(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
		c.deleteNamed(w, r, cs, k.Path, k.Singular)
	}
}
