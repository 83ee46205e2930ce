package console

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"postern.dev/postern/controller/adminapi"
)

// fileManaged returns the last apply's record and its set of objects
// ("kind/name").
func (c *Server) fileManaged(ctx context.Context) (*AppliedFile, map[string]bool) {
	rec := c.core.AppliedFile(ctx)
	return rec, rec.managed()
}

// splitList reads a form list: comma- or line-separated, blanks dropped.
func splitList(s string) []string {
	out := []string{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// resourceForm is the resource page's data.
type resourceForm struct {
	Original  string // "" when creating
	R         adminapi.ResourceSpec
	Ports     string
	Networks  []string
	Groups    []string
	Managed   bool
	AppliedAt time.Time
	AppliedBy string
}

type resourceRow struct {
	adminapi.ResourceSpec
	Managed bool
}

// consoleSpec reads the declarative configuration through the API.
func (c *Server) consoleSpec(r *http.Request, cs *consoleSession, d *pageData) (*adminapi.Spec, bool) {
	var spec adminapi.Spec
	if !c.listPage(r, cs, d, "/api/v1/spec", &spec) {
		return nil, false
	}
	return &spec, true
}

func (c *Server) pageResources(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Resources", "resources")
	var rows []resourceRow
	if spec, ok := c.consoleSpec(r, cs, &d); ok {
		_, managed := c.fileManaged(r.Context())
		for _, res := range spec.Resources {
			rows = append(rows, resourceRow{res, managed[adminapi.KindResource+"/"+res.Name]})
		}
	}
	d.Flash = r.URL.Query().Get("done")
	d.Data = rows
	c.render(w, http.StatusOK, "resources", d)
}

// fillResourceForm adds the choices and the file-managed note.
func (c *Server) fillResourceForm(ctx context.Context, spec *adminapi.Spec, f *resourceForm) {
	for _, n := range spec.RemoteNetworks {
		f.Networks = append(f.Networks, n.Name)
	}
	for _, g := range spec.Groups {
		f.Groups = append(f.Groups, g.Name)
	}
	if f.Original != "" {
		if rec, managed := c.fileManaged(ctx); managed[adminapi.KindResource+"/"+f.Original] {
			f.Managed, f.AppliedAt, f.AppliedBy = true, rec.At, rec.Actor
		}
	}
}

func (c *Server) pageResourceForm(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Resource", "resources")
	spec, ok := c.consoleSpec(r, cs, &d)
	if !ok {
		c.render(w, http.StatusOK, "message", d)
		return
	}
	f := &resourceForm{R: adminapi.ResourceSpec{Ports: []string{}, Groups: []string{}}}
	if name := r.PathValue("name"); name != "" {
		i := slices.IndexFunc(spec.Resources, func(x adminapi.ResourceSpec) bool { return x.Name == name })
		if i < 0 {
			d.Error = "resource " + strconvQuote(name) + " not found"
			c.render(w, http.StatusNotFound, "message", d)
			return
		}
		f.Original, f.R = name, spec.Resources[i]
		d.Title = "Resource " + name
	} else {
		d.Title = "New resource"
	}
	f.Ports = strings.Join(f.R.Ports, ", ")
	c.fillResourceForm(r.Context(), spec, f)
	d.Data = f
	c.render(w, http.StatusOK, "resource", d)
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

func (c *Server) postResource(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Resource", "resources")
	original := r.PathValue("name")
	spec, ok := c.consoleSpec(r, cs, &d)
	if !ok {
		c.render(w, http.StatusForbidden, "message", d)
		return
	}
	res := adminapi.ResourceSpec{
		Name:    strings.TrimSpace(r.PostFormValue("name")),
		Address: strings.TrimSpace(r.PostFormValue("address")),
		Alias:   strings.TrimSpace(r.PostFormValue("alias")),
		Network: strings.TrimSpace(r.PostFormValue("network")),
		Ports:   splitList(r.PostFormValue("ports")),
		Groups:  r.PostForm["groups"],
	}
	if res.Groups == nil {
		res.Groups = []string{}
	}
	method, path := "POST", "/api/v1/resources"
	if original != "" {
		method, path = "PUT", "/api/v1/resources/"+url.PathEscape(original)
		// Keep what the form does not edit (access requirements).
		if i := slices.IndexFunc(spec.Resources, func(x adminapi.ResourceSpec) bool { return x.Name == original }); i >= 0 {
			res.Require = spec.Resources[i].Require
		}
	}
	result, err := c.api(r.Context(), method, path, res, nil)
	if err == nil && result.Err() == "" {
		http.Redirect(w, r, "/console/resources?done="+url.QueryEscape("Saved resource "+res.Name+"."), http.StatusSeeOther)
		return
	}
	f := &resourceForm{Original: original, R: res, Ports: r.PostFormValue("ports")}
	c.fillResourceForm(r.Context(), spec, f)
	d.Error = result.Err()
	if err != nil {
		d.Error = err.Error()
	}
	d.Data = f
	c.render(w, formStatus(result), "resource", d)
}

func (c *Server) deleteResource(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	c.deleteNamed(w, r, cs, "resources", "resource")
}

func (c *Server) deleteNamed(w http.ResponseWriter, r *http.Request, cs *consoleSession, path, what string) {
	name := r.PathValue("name")
	res, err := c.api(r.Context(), "DELETE", "/api/v1/"+path+"/"+url.PathEscape(name), nil, nil)
	if err == nil && res.Err() != "" {
		err = errorString(res.Err())
	}
	if err != nil {
		d := c.page(cs, "Delete "+what, path)
		d.Error = err.Error()
		c.render(w, statusOf(res), "message", d)
		return
	}
	http.Redirect(w, r, "/console/"+path+"?done="+url.QueryEscape("Deleted "+what+" "+name+"."), http.StatusSeeOther)
}

type errorString string

func (e errorString) Error() string { return string(e) }

// formStatus is the status of a form page the API refused: 403 when the
// admin's role may not, else 422 (the input is wrong).
func formStatus(res apiResult) int {
	if res.Status == http.StatusForbidden {
		return http.StatusForbidden
	}
	return http.StatusUnprocessableEntity
}
