package console

import (
	"net/http"
	"strconv"
)

// applyPage is the Apply page's data: the pasted file and the plan.
type applyPage struct {
	YAML string
	Plan string
}

func (c *Server) pageApply(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Apply network.yaml", "apply")
	// Only writers may apply; the API would refuse the others.
	d.Denied = !cs.p.can(capWrite)
	d.Data = applyPage{}
	c.render(w, http.StatusOK, "apply", d)
}

// postApply plans (the Preview button, a dry run) or applies a pasted
// network.yaml through POST /api/v1/apply: the same parser, validation and
// plan as `postern-controller apply`.
func (c *Server) postApply(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Apply network.yaml", "apply")
	text := r.PostFormValue("yaml")
	path := "/api/v1/apply"
	dry := r.PostFormValue("action") != "apply"
	if dry {
		path += "?dry_run=true"
	}
	var plan struct{ Revision int64 }
	res, err := c.api(r.Context(), "POST", path, []byte(text), &plan)
	ap := applyPage{YAML: text}
	status := http.StatusOK
	switch {
	case err != nil:
		d.Error, status = err.Error(), http.StatusInternalServerError
	case res.Err() != "":
		d.Error, status = res.Err(), formStatus(res)
	default:
		if ap.Plan, err = c.core.PlanText(res.Body); err != nil {
			d.Error, status = err.Error(), http.StatusInternalServerError
			break
		}
		if !dry {
			d.Flash = "Applied at revision " + strconv.FormatInt(plan.Revision, 10) + "."
		}
	}
	d.Data = ap
	c.render(w, status, "apply", d)
}
